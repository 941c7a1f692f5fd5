"""The dashboard's pages: the daemon's state as accessible HTML (server-rendered, no framework).

Every value is text first (a level is "70 %", a compartment "occupied, on loan"),
so a screen reader reads what a sighted operator sees; the plan and the plots
are SVG images with a text title and a table beside them. Everything from a
device or the config is escaped.
"""

from __future__ import annotations

import html
import time

from gateway import readable

E = html.escape


def page(title: str, body: str, operator: str | None, csrf: str = "", note: str = "") -> str:
    who = ('<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="%s">'
           '<span>Operator %s</span> <button type="submit">Log out</button></form>' % (E(csrf), E(operator))
           if operator else '<a href="/login">Log in</a>')
    status = '<p role="status" class="note">%s</p>' % E(note) if note else '<p role="status" class="note"></p>'
    return """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%s</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header>
<nav aria-label="Site"><a href="/">Park at a glance</a> <a href="/energy">Energy and open data</a> <a href="/metrics">Metrics</a> %s</nav>
</header>
<main id="main" tabindex="-1">
%s
%s
</main>
</body>
</html>
""" % (E(title), who, status, body)


# -- the overview

def overview(snap: dict) -> str:
    return ('<h1>Park at a glance</h1>\n<div id="park" data-live="park" data-now="%d">%s</div>\n'
            '<section aria-labelledby="alerts-h"><h2 id="alerts-h">Recent alerts</h2>\n'
            '<ol id="alerts" data-live="alerts" aria-live="polite">%s</ol></section>'
            % (time.time(), park(snap), alerts(snap["alerts"])))


def park(snap: dict) -> str:
    return "".join(html for _, html in park_parts(snap))


def park_parts(snap: dict, memo: dict | None = None) -> list[tuple[str | None, str]]:
    """The park's HTML in pieces, so a live page gets only what changed: (id, the element with that id) for each
    part that changes on its own (the gateway's health, a site's state and plan, a pole's or a bin's row, a
    locker), (None, markup) for what holds them. `memo` keeps each device's last part, made again only when
    what it shows changed."""
    out: list[tuple[str | None, str]] = [("gateway", health(snap))]
    for name, site in sorted(snap["sites"].items()):
        out.extend(site_parts(name, site, memo))
    return out


def _part(memo: dict | None, make, item: dict) -> str:
    if memo is None:
        return make(item)
    key = (make, item["id"])
    hit = memo.get(key)
    if hit is not None and hit[0] == item:
        return hit[1]
    html = make(item)
    memo[key] = (item, html)
    return html


def health(snap: dict) -> str:
    bb = snap["backbone"]
    links = "".join("<li>%s (%s): %s, %d frames, %d dropped%s</li>" % (
        E(lk["name"]), E(lk["kind"]), "up" if lk["connected"] else "DOWN", lk["frames"], lk["drops"],
        "" if lk["connected"] or not lk.get("last_error") else " (%s)" % E(str(lk["last_error"])))
        for lk in snap["links"]) or "<li>no links configured</li>"
    return """<section id="gateway" aria-labelledby="gw-h"><h2 id="gw-h">Gateway</h2>
<dl class="facts">
<dt>Version</dt><dd>%s, up %s</dd>
<dt>Devices</dt><dd id="devices-online">%d of %d online</dd>
<dt>Backbone</dt><dd id="backbone">%s, %s; outbox %d messages%s</dd>
<dt>Clock</dt><dd>%s</dd>
</dl>
<h3>Links</h3><ul>%s</ul></section>""" % (
        E(snap["version"]), readable.span(snap["uptime_s"]), snap["devices"]["online"], snap["devices"]["total"],
        "connected" if bb.get("connected") else "DISCONNECTED", E(str(bb.get("broker"))), bb.get("outbox_depth", 0),
        ", oldest %s" % readable.span(bb["oldest_age_s"]) if bb.get("oldest_age_s") else "",
        "synchronised" if (snap.get("clock") or {}).get("synchronised") else "NOT synchronised", links)


def site_html(name: str, site: dict) -> str:
    return "".join(html for _, html in site_parts(name, site))


def site_parts(name: str, site: dict, memo: dict | None = None) -> list[tuple[str | None, str]]:
    light = site["lighting"]
    out: list[tuple[str | None, str]] = [
        (None, '<section aria-labelledby="site-%s"><h2 id="site-%s">Site %s</h2>\n' % (E(name), E(name), E(name))),
        ("state-" + name, '<p id="state-%s">%s, level cap %s %%; lamp faults: %s</p>\n' % (
            E(name), "dark" if light.get("dark") else "daylight", light.get("cap"),
            E(", ".join(light.get("lamp_faults") or []) or "none")))]
    if site["poles"]:
        out.extend(plan_parts(name, site, memo))
        out.append((None, '<table><caption>Light poles</caption><thead><tr><th scope="col">Pole</th><th scope="col">'
                          'Level now</th><th scope="col">Why</th><th scope="col">Last report</th></tr></thead><tbody>'))
        out.extend(("pole-" + p["id"], _part(memo, pole_row, p)) for p in site["poles"])
        out.append((None, "</tbody></table>\n"))
    if site["bins"]:
        out.append((None, '<table><caption>Waste containers</caption><thead><tr><th scope="col">Container</th>'
                          '<th scope="col">Fill</th><th scope="col">Trend</th><th scope="col">Status</th></tr></thead>'
                          '<tbody>'))
        out.extend(("bin-" + b["id"], _part(memo, bin_row, b)) for b in site["bins"])
        out.append((None, "</tbody></table>\n"))
    out.extend(("locker-" + k["id"], _part(memo, locker_table, k) + "\n") for k in site["lockers"])
    out.append((None, "</section>\n"))
    return out


def plan(name: str, site: dict) -> str:
    return "".join(html for _, html in plan_parts(name, site))


def plan_parts(name: str, site: dict, memo: dict | None = None) -> list[tuple[str | None, str]]:
    """The site's plan as an SVG image: each pole's dot and the text title (all levels, for a screen reader) are
    parts of their own; the frame and the paths change only with the layout."""
    poles = site["poles"]
    if not poles:
        return []
    w = 120 * (max(p["x"] for p in poles) + 1)
    h = 90 * (max(p["y"] for p in poles) + 1)
    at = {p["id"]: p for p in poles}
    lines = []
    for a, b in site["edges"]:
        if a in at and b in at:
            lines.append('<line x1="%d" y1="%d" x2="%d" y2="%d" class="path"/>' % (
                60 + 120 * at[a]["x"], 40 + 90 * at[a]["y"], 60 + 120 * at[b]["x"], 40 + 90 * at[b]["y"]))
    summary = "; ".join("%s %s" % (p["id"], "unknown" if p["level"] is None else "%d %%" % p["level"]) for p in poles)
    out: list[tuple[str | None, str]] = [
        (None, '<figure id="map-%s"><svg role="img" aria-labelledby="plan-%s" viewBox="0 0 %d %d" class="plan">'
               % (E(name), E(name), w, h)),
        ("plan-" + name, '<title id="plan-%s">Path plan of %s with each pole\'s light level: %s</title>'
                         % (E(name), E(name), E(summary))),
        (None, "".join(lines))]
    out.extend(("dot-" + p["id"], _part(memo, dot, p)) for p in poles)
    out.append((None, '</svg><figcaption>Poles on the path; the bigger and brighter the dot, the higher the level.'
                      '</figcaption></figure>\n'))
    return out


def dot(p: dict) -> str:
    cx, cy = 60 + 120 * p["x"], 40 + 90 * p["y"]
    lvl = p["level"] if p["level"] is not None else 0
    return ('<g id="dot-%s"><circle cx="%d" cy="%d" r="%d" class="lamp%s" fill-opacity="%.2f"/><text x="%d" y="%d" '
            'class="label">%s %s</text></g>' % (E(p["id"]), cx, cy, 10 + lvl // 8, " fault" if p["fault"] else "",
                                                0.15 + 0.85 * lvl / 100, cx, cy + 38, E(p["id"]),
                                                "--" if p["level"] is None else "%d%%" % p["level"]))


def pole_row(p: dict) -> str:
    return ('<tr id="pole-%s"><th scope="row"><a href="/device/%s">%s</a></th><td class="num">%s</td><td>%s</td>'
            '<td>%s, %s</td></tr>' % (E(p["id"]), E(p["id"]), E(p["id"]),
                                      "--" if p["level"] is None else "%d %%" % p["level"], E(p["why"]),
                                      E(p["report"]), seen(p["seen"]) + ("" if p["online"] else " (OFFLINE)")))


def seen(ts: float | None) -> str:
    """When a report came, as the clock time: the page's script shows it as an age that it keeps current
    itself, so a row changes (and is sent again) only when a report does."""
    if not ts:
        return "never"
    return '<time datetime="%s" data-ago>at %s</time>' % (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), time.strftime("%H:%M:%S", time.localtime(ts)))


def bin_row(b: dict) -> str:
    fill = "no reading" if b["fill"] is None else "%d %%" % b["fill"]
    bar = '' if b["fill"] is None else ('<svg class="bar" viewBox="0 0 100 10" aria-hidden="true" focusable="false">'
                                        '<rect width="%d" height="10"/></svg>' % b["fill"])
    return ('<tr id="bin-%s"><th scope="row"><a href="/device/%s">%s</a></th><td class="num">%s %s</td>'
            '<td>%s</td><td>%s</td></tr>' % (E(b["id"]), E(b["id"]), E(b["id"]), fill, bar, E(b["trend"]),
                                             E(b["status"]) + ("" if b["online"] else " (OFFLINE)")))


def locker_table(k: dict) -> str:
    rows = "".join('<tr><th scope="row">%d</th><td>%s</td></tr>' % (c["n"], E(c["text"])) for c in k["comps"])
    return ('<table id="locker-%s"><caption>Locker <a href="/device/%s">%s</a>%s</caption><thead><tr>'
            '<th scope="col">Compartment</th><th scope="col">State</th></tr></thead><tbody>%s</tbody></table>'
            % (E(k["id"]), E(k["id"]), E(k["id"]), "" if k["online"] else " (OFFLINE)", rows))


def alerts(items: list[dict]) -> str:
    if not items:
        return "<li>No alerts since the gateway started.</li>"
    return "".join('<li><time datetime="%s">%s</time> <a href="/device/%s">%s</a>: %s</li>' % (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(a["ts"])), time.strftime("%H:%M:%S", time.localtime(a["ts"])),
        E(a["device"]), E(a["device"]), E(a["text"])) for a in reversed(items))


# -- one device

def device(d: dict, history: list[tuple[float, float]], what: str, operator: str | None, csrf: str) -> str:
    facts = [("Role", d["role"].replace("_", " ")), ("Site", d["site"]), ("Position", d.get("position") or "-"),
             ("State", "online" if d.get("online") else "OFFLINE"), ("Firmware", readable.version(d.get("fw"))),
             ("Last seen", readable.age(d.get("last_seen"))), ("Link", d.get("link") or "-"),
             ("Last report", readable.report(d.get("state") or {}))]
    for c in d.get("commands") or []:
        facts.append(("Pending command %s" % c.get("id"), "%s, %s" % (c.get("type"), c.get("state"))))
    dl = "".join("<dt>%s</dt><dd>%s</dd>" % (E(k), E(str(v))) for k, v in facts)
    return ('<h1>%s, %s</h1>\n<dl class="facts" id="device-facts">%s</dl>\n'
            '<section aria-labelledby="hist-h"><h2 id="hist-h">History: %s</h2>%s</section>\n%s' % (
                E(d["id"]), E(d["role"].replace("_", " ")), dl, E(what), history_html(history, what),
                actions(d, operator, csrf)))


def history_html(points: list[tuple[float, float]], what: str) -> str:
    if len(points) < 2:
        return "<p>Not enough reports yet for a plot.</p>"
    t0, t1 = points[0][0], points[-1][0]
    span = max(1.0, t1 - t0)
    hi = max(100.0, max(v for _, v in points))
    xy = " ".join("%.1f,%.1f" % (10 + 580 * (t - t0) / span, 150 - 140 * v / hi) for t, v in points)
    title = "%s from %s to %s: first %g, last %g, lowest %g, highest %g" % (
        what, time.strftime("%H:%M", time.localtime(t0)), time.strftime("%H:%M", time.localtime(t1)), points[0][1],
        points[-1][1], min(v for _, v in points), max(v for _, v in points))
    rows = "".join("<tr><td>%s</td><td class=\"num\">%g</td></tr>" % (time.strftime("%H:%M:%S", time.localtime(t)), v)
                   for t, v in points[-20:])
    return ('<svg role="img" aria-labelledby="hist-t" viewBox="0 0 600 160" class="plot"><title id="hist-t">%s'
            '</title><line x1="10" y1="150" x2="590" y2="150" class="axis"/><polyline points="%s" class="series"/>'
            '</svg><details><summary>The last %d values as a table</summary><table><thead><tr><th scope="col">Time'
            '</th><th scope="col">%s</th></tr></thead><tbody>%s</tbody></table></details>'
            % (E(title), xy, min(20, len(points)), E(what), rows))


def actions(d: dict, operator: str | None, csrf: str) -> str:
    if not operator:
        return ('<section aria-labelledby="act-h"><h2 id="act-h">Actions</h2><p><a href="/login?next=/device/%s">'
                'Log in</a> as an operator to light, unlock or reboot.</p></section>' % E(d["id"]))
    hidden = '<input type="hidden" name="csrf" value="%s">' % E(csrf)
    url = "/device/%s/action" % E(d["id"])
    forms = []
    if d["role"] == "light_pole":
        forms.append('<form method="post" action="%s"><fieldset><legend>Set the light</legend>%s'
                     '<input type="hidden" name="action" value="light">'
                     '<label for="level">Level (0-100 %%)</label> <input id="level" name="level" type="number" min="0" '
                     'max="100" required> <label for="hold">Hold (s, 0 = until the next profile)</label> '
                     '<input id="hold" name="hold" type="number" min="0" max="86400" value="0"> '
                     '<button type="submit">Set light</button></fieldset></form>' % (url, hidden))
    if d["role"] == "locker":
        forms.append('<form method="post" action="%s"><fieldset><legend>Unlock a compartment</legend>%s'
                     '<input type="hidden" name="action" value="unlock">'
                     '<label for="comp">Compartment</label> <input id="comp" name="comp" type="number" min="1" '
                     'max="32" required> <label for="reason">Reason (goes into the audit trail)</label> '
                     '<input id="reason" name="reason" type="text" maxlength="32" required> '
                     '<button type="submit">Unlock</button></fieldset></form>' % (url, hidden))
    forms.append('<form method="post" action="%s"><fieldset><legend>Reboot</legend>%s'
                 '<input type="hidden" name="action" value="reboot"><button type="submit">Reboot %s</button>'
                 '</fieldset></form>' % (url, hidden, E(d["id"])))
    return '<section aria-labelledby="act-h"><h2 id="act-h">Actions</h2>%s</section>' % "".join(forms)


def energy(nights: list[dict], months: list[dict], watts: float) -> str:
    def table(rows, by, caption):
        if not rows:
            return "<p>No night measured yet: the poles are counted while it is dark.</p>"
        body = "".join('<tr><th scope="row">%s</th><td>%s</td><td class="num">%d</td><td class="num">%.1f Wh</td>'
                       '<td class="num">%.1f Wh</td><td class="num">%s</td></tr>' % (
                           E(r[by]), E(r["site"]), r["poles"], r["energy_wh"], r["full_level_wh"],
                           "-" if r["saving_pct"] is None else "%.1f %%" % r["saving_pct"]) for r in rows[-31:])
        return ('<table><caption>%s</caption><thead><tr><th scope="col">%s</th><th scope="col">Site</th>'
                '<th scope="col">Poles</th><th scope="col">Used</th><th scope="col">Always at full</th>'
                '<th scope="col">Saving</th></tr></thead><tbody>%s</tbody></table>' % (caption, by.title(), body))
    links = " ".join('<a href="/opendata/%s.%s">%s.%s</a>' % (n, f, n, f)
                     for n in ("fill", "pickups", "energy-night", "energy-month") for f in ("csv", "json"))
    return ('<h1>Lighting energy</h1><p>Energy the poles used while it was dark, against the same poles always at '
            'full level (%g W each), from their levels and the dimming curve.</p>%s%s'
            '<h2>Open data</h2><p>For the city\'s data platform, nothing personal (fields: docs/operations.md): %s</p>'
            % (watts, table(nights, "night", "Per night"), table(months, "month", "Per month"), links))


def login(message: str = "", next_url: str = "/") -> str:
    err = '<p role="alert" class="error">%s</p>' % E(message) if message else ""
    return ('<h1>Operator login</h1>%s<form method="post" action="/login"><input type="hidden" name="next" '
            'value="%s"><p><label for="name">Name</label> <input id="name" name="name" autocomplete="username" '
            'required></p><p><label for="password">Password</label> <input id="password" name="password" '
            'type="password" autocomplete="current-password" required></p><p><button type="submit">Log in</button>'
            '</p></form>' % (err, E(next_url)))
