"""The park at a glance: the dashboard the daemon serves (aiohttp), its operators and its metrics.

`server.Dashboard` is started by the daemon; `config.read_web` reads `[web]`;
`auth` keeps the operators (scrypt hashes, no default password) and their
sessions; `view` turns the daemon's state into the pages (server-rendered
HTML, updated live by server-sent events); `metrics` is the Prometheus
collector behind `/metrics`.
"""
