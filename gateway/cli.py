"""`park-gateway`: run the daemon, and talk to a running one over its Unix socket.

Every command takes --json for scripts (one JSON document on stdout). Exit
codes: 0 done, 1 refused or failed (the message says why), 2 bad usage or
config, 3 no daemon listening on the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from gateway import config as config_mod

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p.add_argument("--config", "-c", default=argparse.SUPPRESS,
                   help="config file (default $%s or %s)" % (config_mod.ENV_CONFIG, config_mod.DEFAULT_PATH))
    p.add_argument("--socket", default=argparse.SUPPRESS, help="API socket (default from the config)")
    return p


def build_parser() -> argparse.ArgumentParser:
    c = _common()
    ap = argparse.ArgumentParser(prog="park-gateway", parents=[c],
                                 description="Park edge gateway: daemon and operator commands.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[c], help="run the daemon in the foreground (systemd runs this)")
    sub.add_parser("status", parents=[c], help="links, devices online/offline, outbox, backbone")
    sub.add_parser("devices", parents=[c], help="all registered devices")
    d = sub.add_parser("device", parents=[c], help="show one device, or: add / import / remove / export")
    d.add_argument("words", nargs="+", metavar="ID | add ID | import FILE | remove ID | export")
    d.add_argument("--role", choices=config_mod.ROLES)
    d.add_argument("--site")
    d.add_argument("--key-file", help="32-byte raw key file (0600)")
    d.add_argument("--position", help="where it stands (free text, e.g. path node)")
    d.add_argument("--replace", action="store_true", help="re-provision an existing id")
    d.add_argument("--with-keys", metavar="FILE", help="export: also write keys to FILE (created 0600)")
    t = sub.add_parser("tail", parents=[c], help="live telemetry and events")
    t.add_argument("id", nargs="?")
    t.add_argument("--count", type=int, default=0, help="stop after this many lines")
    li = sub.add_parser("light", parents=[c], help="set a pole's level")
    li.add_argument("id")
    li.add_argument("--level", type=int, required=True)
    li.add_argument("--hold", type=int, default=0, help="s; 0 = until the next profile change")
    lp = sub.add_parser("light-profile", parents=[c], help="send a pole its profile")
    lp.add_argument("id")
    for k, v in (("base", 10), ("full", 100), ("hold", 60), ("fade-up", 300), ("fade-down", 3000), ("max", 100)):
        lp.add_argument("--" + k, type=int, default=v)
    u = sub.add_parser("unlock", parents=[c], help="open a locker compartment (reason is logged)")
    u.add_argument("id")
    u.add_argument("--comp", type=int, required=True)
    u.add_argument("--reason", required=True)
    r = sub.add_parser("reboot", parents=[c], help="reboot a device")
    r.add_argument("id")
    r.add_argument("--delay", type=int, default=0)
    cf = sub.add_parser("config", parents=[c], help="config check [FILE] | config set ID KEY=VALUE...")
    cf.add_argument("words", nargs="+", metavar="check [FILE] | set ID KEY=VALUE")
    pk = sub.add_parser("pickups", parents=[c], help="containers to collect, per site")
    pk.add_argument("--site")
    return ap


def _out(args, data, text: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text if text is not None else _plain(data))


def _plain(data, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(data, dict):
        lines = []
        for k, v in data.items():
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(_plain(v, indent + 1))
            else:
                lines.append("%s%s: %s" % (pad, k, v))
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(_plain(x, indent) if isinstance(x, (dict, list)) else pad + "- " + str(x) for x in data)
    return pad + str(data)


def _config(args, required: bool = True) -> config_mod.Config | None:
    path = getattr(args, "config", None)
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        if required or path or os.path.exists(os.environ.get(config_mod.ENV_CONFIG) or config_mod.DEFAULT_PATH):
            raise CliError(str(e), EXIT_USAGE)
        return None


def _socket(args) -> str:
    s = getattr(args, "socket", None) or os.environ.get(config_mod.ENV_SOCKET)
    if s:
        return s
    cfg = _config(args, required=False)
    return cfg.api_socket if cfg else config_mod.DEFAULT_SOCKET


def _call(args, req: dict):
    from gateway.api import ApiError, request

    path = _socket(args)
    try:
        return asyncio.run(request(path, req, timeout=60))
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError("no park-gateway daemon listens on %s (is it running? `systemctl status park-gateway`)" % path,
                       EXIT_NO_DAEMON)
    except PermissionError:
        raise CliError("no permission for %s: run as the gateway user or a member of its api_group" % path,
                       EXIT_NO_DAEMON)
    except ApiError as e:
        raise CliError("%s: %s" % (e.code, e.message))


def _age(ts) -> str:
    if not ts:
        return "never"
    s = time.time() - ts
    return "%ds ago" % s if s < 120 else "%dm ago" % (s / 60) if s < 7200 else "%dh ago" % (s / 3600)


def cmd_status(args) -> int:
    st = _call(args, {"op": "status"})
    if getattr(args, "json", False):
        _out(args, st)
        return 0
    bb = st["backbone"]
    lines = ["park-gateway up %ds" % st["uptime_s"],
             "backbone: %s %s  outbox %d msgs (oldest %s)  published %d  dropped %d" % (
                 bb.get("broker"), "connected" if bb.get("connected") else "DISCONNECTED",
                 bb.get("outbox_depth", 0), "%.0fs" % bb["oldest_age_s"] if bb.get("oldest_age_s") else "-",
                 bb.get("published", 0), bb.get("dropped_total", 0)),
             "devices: %d online, %d offline, %d total" % (
                 st["devices"]["online"], st["devices"]["offline"], st["devices"]["total"]),
             "links:"]
    for lk in st["links"]:
        c = lk["counters"]
        drops = sum(v for k, v in c.items() if k.startswith("drop_"))
        lines.append("  %-10s %-6s %-4s rx %d frames, %d dropped%s" % (
            lk["name"], lk["kind"], "up" if lk["connected"] else "DOWN", c.get("rx_frames", 0), drops,
            "" if lk["connected"] else "  (%s)" % lk["last_error"]))
    if st["counters"]:
        lines.append("session: " + ", ".join("%s=%d" % kv for kv in sorted(st["counters"].items())))
    _out(args, st, "\n".join(lines))
    return 0


def cmd_devices(args) -> int:
    devs = _call(args, {"op": "devices"})
    rows = ["%-8s %-16s %-10s %-8s %-10s %s" % ("ID", "ROLE", "SITE", "STATE", "FW", "LAST SEEN")]
    for d in devs:
        fw = d.get("fw")
        rows.append("%-8s %-16s %-10s %-8s %-10s %s" % (
            d["id"], d["role"], d["site"], "online" if d["online"] else "OFFLINE",
            "%d.%d.%d" % (fw // 10000, fw // 100 % 100, fw % 100) if fw is not None else "-", _age(d["last_seen"])))
    _out(args, devs, "\n".join(rows))
    return 0


def cmd_device(args) -> int:
    from gateway.registry import Registry, RegistryError, write_private

    w = args.words
    if w[0] not in ("add", "import", "remove", "export"):
        if len(w) != 1:
            raise CliError("usage: park-gateway device ID", EXIT_USAGE)
        _out(args, _call(args, {"op": "device", "id": w[0]}))
        return 0
    cfg = _config(args)
    try:
        with Registry(cfg.registry_path) as reg:
            if w[0] == "add":
                if len(w) != 2 or not (args.role and args.site and args.key_file):
                    raise CliError("usage: park-gateway device add ID --role ROLE --site SITE --key-file FILE", EXIT_USAGE)
                if args.site not in cfg.sites:
                    raise CliError("site %r is not in %s (sites: %s)" % (args.site, cfg.path, ", ".join(cfg.sites)), EXIT_USAGE)
                with open(args.key_file, "rb") as f:
                    key = f.read()
                dev = reg.add(w[1], args.role, args.site, key, args.position, replace=args.replace)
                result = {"added": [dev.id]}
            elif w[0] == "import":
                if len(w) != 2:
                    raise CliError("usage: park-gateway device import FILE", EXIT_USAGE)
                result = {"added": reg.import_file(w[1], replace=args.replace)}
            elif w[0] == "remove":
                if len(w) != 2:
                    raise CliError("usage: park-gateway device remove ID", EXIT_USAGE)
                reg.remove(w[1])
                result = {"removed": [w[1]]}
            else:
                result = {"devices": reg.export()}
                if args.with_keys:
                    write_private(args.with_keys, json.dumps(reg.export(with_keys=True), indent=2))
                    result["keys_written_to"] = args.with_keys
    except (RegistryError, OSError) as e:
        raise CliError(str(e))
    if w[0] != "export":
        try:
            _call(args, {"op": "reload"})
            result["daemon"] = "reloaded"
        except CliError as e:
            if e.code != EXIT_NO_DAEMON:
                raise
            result["daemon"] = "not running (picks the change up on start)"
    _out(args, result)
    return 0


def cmd_tail(args) -> int:
    from gateway.api import tail

    async def go():
        n = 0
        async for ev in tail(_socket(args), args.id):
            if getattr(args, "json", False):
                print(json.dumps(ev, default=str), flush=True)
            elif ev["kind"] == "alert":
                print("%s %-9s %-6s %s %s" % (time.strftime("%H:%M:%S"), "ALERT", ev["device"], ev["alert"],
                                              json.dumps(ev["body"], default=str)), flush=True)
            else:
                msg = ev.get("msg", {})
                fields = " ".join("%s=%s" % (k, v) for k, v in msg.items() if k != "type")
                print("%s %-9s %-6s %s %s" % (time.strftime("%H:%M:%S"), ev["kind"], ev.get("device", ""),
                                              msg.get("type", ""), fields or ""), flush=True)
            n += 1
            if args.count and n >= args.count:
                return

    try:
        asyncio.run(go())
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError("no park-gateway daemon listens on %s" % _socket(args), EXIT_NO_DAEMON)
    except KeyboardInterrupt:
        pass
    return 0


def _command(args, device_id: str, cmd: dict) -> int:
    res = _call(args, {"op": "command", "id": device_id, "command": cmd})
    _out(args, res, "%s: %s acknowledged" % (device_id, cmd["type"]))
    return 0


def cmd_config(args) -> int:
    w = args.words
    if w[0] == "check":
        path = w[1] if len(w) > 1 else getattr(args, "config", None)
        try:
            cfg = config_mod.load(path)
        except config_mod.ConfigError as e:
            _out(args, {"ok": False, "error": str(e), "file": e.file, "line": e.line, "key": e.key}, str(e))
            return EXIT_USAGE
        summary = {"ok": True, "file": cfg.path, "sites": sorted(cfg.sites), "links": [lk.name for lk in cfg.links],
                   "state_dir": cfg.state_dir, "api_socket": cfg.api_socket,
                   "broker": "%s:%d" % (cfg.uplink.host, cfg.uplink.port)}
        _out(args, summary, "%s: OK (%d sites, %d links)" % (cfg.path, len(cfg.sites), len(cfg.links)))
        return 0
    if w[0] == "set" and len(w) >= 3:
        values = {}
        for kv in w[2:]:
            k, sep, v = kv.partition("=")
            if not sep:
                raise CliError("%r is not KEY=VALUE" % kv, EXIT_USAGE)
            values[k] = _value(v)
        return _command(args, w[1], {"type": "config", "values": values})
    raise CliError("usage: park-gateway config check [FILE] | config set ID KEY=VALUE...", EXIT_USAGE)


def _value(v: str):
    if v in ("true", "false"):
        return v == "true"
    try:
        return int(v)
    except ValueError:
        return v


def cmd_run(args) -> int:
    from gateway.daemon import serve
    from gateway.statelock import AlreadyRunning

    cfg = _config(args)
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(cfg))
    except AlreadyRunning as e:
        raise CliError(str(e), EXIT_FAIL) from None
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        c = args.cmd
        if c == "run":
            return cmd_run(args)
        if c == "status":
            return cmd_status(args)
        if c == "devices":
            return cmd_devices(args)
        if c == "device":
            return cmd_device(args)
        if c == "tail":
            return cmd_tail(args)
        if c == "light":
            return _command(args, args.id, {"type": "light_set", "level": args.level, "hold": args.hold})
        if c == "light-profile":
            return _command(args, args.id, {"type": "light_profile", "base": args.base, "full": args.full,
                                            "hold": args.hold, "fade_up": args.fade_up,
                                            "fade_down": args.fade_down, "max": args.max, "curfew": []})
        if c == "unlock":
            return _command(args, args.id, {"type": "unlock", "comp": args.comp, "reason": args.reason})
        if c == "reboot":
            return _command(args, args.id, {"type": "reboot", "delay": args.delay})
        if c == "config":
            return cmd_config(args)
        if c == "pickups":
            _out(args, _call(args, {"op": "pickups", "site": args.site}))
            return 0
    except CliError as e:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(e), "exit": e.code}))
        else:
            print("park-gateway: %s" % e, file=sys.stderr)
        return e.code
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
