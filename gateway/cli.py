"""`park-gateway`: run the daemon, and talk to a running one over its Unix socket.

Every command takes --json for scripts (one JSON document on stdout); a
failure is then {"ok": false, "error": {"code", "message", "hint"}, "exit"},
the same error object the backbone's cmd/res carries. Exit codes: 0 done,
1 refused or failed (the message says why), 2 bad usage or config, 3 no
daemon listening on the socket. `--timeout` bounds every command
from the moment it is asked; a device command not answered by then is
cancelled in the daemon and never carried out later. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time

from gateway import config as config_mod
from gateway import readable
from protocol import rules

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3
DEFAULT_TIMEOUT = "30s"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class CliError(Exception):
    """A refusal: `code` is the exit status, `reason` a stable word for scripts (--json error.code),
    `hint` what to do about it."""

    def __init__(self, message: str, code: int = EXIT_FAIL, reason: str = "", hint: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.hint = hint


_REASONS = {EXIT_FAIL: "failed", EXIT_USAGE: "usage", EXIT_NO_DAEMON: "no_daemon"}
_HINTS = {
    "unknown_device": "`park-gateway devices` lists the registered ids",
    "unknown_site": "the sites are the [sites.NAME] tables of the config",
    "bad_value": "`park-gateway COMMAND --help` shows each value's range",
    "busy": "wait for the queued commands (`park-gateway device ID`) or cancel one",
    "timeout": "the device did not answer in time; check it with `park-gateway device ID`",
    "unknown_command": "`park-gateway device ID` lists its pending commands with their ids",
}


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p.add_argument("--config", "-c", default=argparse.SUPPRESS,
                   help="config file (default $%s or %s)" % (config_mod.ENV_CONFIG, config_mod.DEFAULT_PATH))
    p.add_argument("--socket", default=argparse.SUPPRESS, help="API socket (default from the config)")
    p.add_argument("--timeout", type=duration, default=argparse.SUPPRESS, metavar="DURATION",
                   help="give up (and cancel the command) after this long, e.g. 10s, 2m (default %s)" % DEFAULT_TIMEOUT)
    return p


def duration(text: str) -> float:
    """Seconds from "90", "90s", "500ms", "15m", "1h" or "1d" (argparse type)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError("%r is not a duration (e.g. 30s, 15m, 1h)" % text)
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _device_command(sub, name: str, parents, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, parents=parents, help=help)
    p.add_argument("--queue-for", type=duration, default=0.0, metavar="DURATION",
                   help="if the device is offline, keep the command queued this long (e.g. 1h) instead of "
                        "cancelling it at --timeout")
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
    d.add_argument("--key-file", help="key file: 32 raw bytes or 64 hex characters, mode 0600")
    d.add_argument("--position", help="where it stands (free text, e.g. path node)")
    d.add_argument("--replace", action="store_true", help="re-provision an existing id")
    d.add_argument("--with-keys", metavar="FILE", help="export: also write keys to FILE (created 0600)")
    d.add_argument("--registry", metavar="PATH", help="this registry file instead of the config's (no daemon needed)")
    d.add_argument("--create", action="store_true", help="add/import: create the registry if it does not exist")
    d.add_argument("--check", action="store_true",
                   help="import: say what importing would do (registered, same key, key owner), change nothing")
    t = sub.add_parser("tail", parents=[c], help="live telemetry and events")
    t.add_argument("id", nargs="?")
    t.add_argument("--count", type=int, default=0, help="stop after this many lines")
    li = _device_command(sub, "light", [c], "set a pole's level")
    li.add_argument("id")
    li.add_argument("--level", type=int, required=True)
    li.add_argument("--hold", type=int, default=0, help="s; 0 = until the next profile change")
    lp = _device_command(sub, "light-profile", [c], "send a pole its profile")
    lp.add_argument("id")
    for k, v in (("base", rules.LIGHT_BASE), ("full", rules.LIGHT_FULL), ("hold", rules.LIGHT_HOLD_S),
                 ("fade-up", rules.LIGHT_FADE_UP_MS), ("fade-down", rules.LIGHT_FADE_DOWN_MS), ("max", rules.LIGHT_MAX)):
        lp.add_argument("--" + k, type=int, default=v)
    u = _device_command(sub, "unlock", [c], "open a locker compartment (reason is logged)")
    u.add_argument("id")
    u.add_argument("--comp", type=int, required=True)
    u.add_argument("--reason", required=True)
    r = _device_command(sub, "reboot", [c], "reboot a device")
    r.add_argument("id")
    r.add_argument("--delay", type=int, default=0)
    cf = _device_command(sub, "config", [c], "config check [FILE] | config set ID KEY=VALUE...")
    cf.add_argument("words", nargs="+", metavar="check [FILE] | set ID KEY=VALUE")
    cn = sub.add_parser("cancel", parents=[c], help="cancel a queued command (its id: `park-gateway device ID`)")
    cn.add_argument("id")
    cn.add_argument("command_id", metavar="COMMAND_ID")
    pk = sub.add_parser("pickups", parents=[c], help="containers to collect, per site")
    pk.add_argument("--site")
    op = sub.add_parser("operator", parents=[c], help="dashboard operators: operator add NAME | remove NAME | list")
    op.add_argument("action", choices=["add", "remove", "list"])
    op.add_argument("name", nargs="?")
    op.add_argument("--password-stdin", action="store_true", help="read the password from stdin (no prompt)")
    op.add_argument("--replace", action="store_true", help="add: set a new password for an existing operator")
    tk = sub.add_parser("token", parents=[c], help="token issue: a booking token for a locker compartment")
    tk.add_argument("action", choices=["issue"])
    tk.add_argument("--locker", required=True, metavar="ID")
    tk.add_argument("--comp", type=int, required=True, metavar="N", help="compartment 1-32")
    tk.add_argument("--from", dest="not_before", default="now", metavar="TIME",
                    help="valid from: ISO 8601 (2026-12-01T14:00, local time without a zone), now, now+1h "
                         "(default now)")
    tk.add_argument("--until", required=True, metavar="TIME", help="valid until (same forms), at most 31 days later")
    tk.add_argument("--id", type=int, default=None, help="token id 1-4294967295 (default: random)")
    tk.add_argument("--key-file", help="the locker's booking key (default STATE_DIR/booking/ID.key, mode 0600)")
    _update_parser(sub, c)
    return ap


# ---------------------------------------------------------------- update (software updates, docs/updates.md)

def _update_parser(sub, c) -> None:
    up = sub.add_parser("update", parents=[c], help="software updates: import FILE | plan | status | halt | resume | abort")
    us = up.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = us.add_parser("import", parents=[c], help="check a bundle's signature against [update] release_keys and store it")
    p.add_argument("file", metavar="FILE")
    p = us.add_parser("plan", parents=[c], help="start a rollout of a bundle at a site (canary devices first)")
    p.add_argument("--bundle", type=int, required=True, metavar="ID")
    p.add_argument("--site", required=True)
    p.add_argument("--canary", type=int, metavar="N", help="devices updated first (default [update] canary)")
    p.add_argument("--device", action="append", dest="devices", metavar="ID", help="only this device (repeatable)")
    p = us.add_parser("status", parents=[c], help="bundles, rollouts and each device's progress")
    p.add_argument("rollout", nargs="?", type=int)
    for name, what in (("halt", "stop sending (devices keep what they hold)"), ("resume", "go on after a halt"),
                       ("abort", "stop and discard what devices staged")):
        p = us.add_parser(name, parents=[c], help=what)
        p.add_argument("rollout", type=int)


def cmd_update(args) -> int:
    from gateway.update import UpdateError

    a = args.action
    if a == "import":
        from protocol.codes import UPD_SIZE_MAX
        from gateway.update import Store, import_into

        cfg = _config(args)
        try:
            with open(args.file, "rb") as f:
                data = f.read(UPD_SIZE_MAX + 65536)
        except OSError as e:
            raise CliError("cannot read %s: %s" % (args.file, e.strerror), EXIT_USAGE, "bad_file")
        try:
            with Store(cfg.update.store) as st:
                res = import_into(st, cfg.update, data, os.path.basename(args.file))
        except UpdateError as e:
            raise CliError("%s refused: %s" % (args.file, e.message), reason=e.code,
                           hint="only bundles signed by a key in [update] release_keys are imported")
        _out(args, res, "bundle %d: %s %s (%s), %d B, key %s%s" % (
            res["bundle"], res["role"], res["version"], res["kind"], res["size"], res["key"],
            "" if res["new"] else " (already imported)"))
        return 0
    req: dict = {"op": "update", "action": a}
    if a == "plan":
        req.update(bundle=args.bundle, site=args.site, canary=args.canary, devices=args.devices)
    elif a in ("halt", "resume", "abort", "status"):
        req["rollout"] = args.rollout
    try:
        res = _call(args, req)
    except CliError as e:
        if a != "status" or e.code != EXIT_NO_DAEMON:
            raise
        res = _update_offline(args)  # no daemon: what the store says
    if a == "status" and args.rollout is None:
        _out(args, res, update_text(res))
    else:
        _out(args, res, rollout_text(res))
    return 0


def _update_offline(args) -> dict:
    from gateway.update import UpdateService

    cfg = _config(args)
    svc = UpdateService(cfg.update, {}, None)
    try:
        return svc.status(args.rollout)
    finally:
        svc.close()


def rollout_text(r: dict) -> str:
    head = "rollout %d: %s %s at %s, %s%s" % (r["rollout"], r["role"], r["version"], r["site"], r["state"],
                                             " (%s)" % r["reason"] if r["reason"] else "")
    lines = [head]
    for d in r["devices"]:
        why = ": %s" % d["reason"] if d["reason"] else ""
        if d["detail"]:
            why += " (%s)" % d["detail"]
        lines.append("  %-8s %-7s %-12s %d/%d B%s" % (d["device"], "canary" if d["canary"] else "", d["state"],
                                                     d["bytes"], d["size"], why))
    return "\n".join(lines)


def update_text(st: dict) -> str:
    lines = ["bundles:" if st["bundles"] else "no bundles imported"]
    for b in st["bundles"]:
        lines.append("  %d  %s %s (%s), floor %s, %d B, key %s" % (b["bundle"], b["role"], b["version"], b["kind"],
                                                                b["floor"], b["size"], b["key"]))
    for r in st["rollouts"]:
        lines.append(rollout_text(r))
    if st["refused"]:
        lines.append("refused:")
        for x in st["refused"]:
            lines.append("  %s  %s: %s (%s)" % (time.strftime("%Y-%m-%d %H:%M", time.localtime(x["at"])), x["what"],
                                                x["code"], x["reason"]))
    return "\n".join(lines)


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
            raise CliError(str(e), EXIT_USAGE, "bad_config", "`park-gateway config check` names every problem")
        return None


def _socket(args) -> str:
    s = getattr(args, "socket", None) or os.environ.get(config_mod.ENV_SOCKET)
    if s:
        return s
    cfg = _config(args, required=False)
    return cfg.api_socket if cfg else config_mod.DEFAULT_SOCKET


def _left(args) -> float:
    """Seconds left of --timeout, counted from when the command was asked (main's start)."""
    total = getattr(args, "timeout", None) or duration(DEFAULT_TIMEOUT)
    return max(0.0, total - (time.monotonic() - getattr(args, "asked", time.monotonic())))


def _call(args, req: dict):
    from gateway.api import ApiError, request

    path = _socket(args)
    left = _left(args)
    if req.get("op") == "command":
        # the daemon answers "timeout" itself just before the client would give up
        req = dict(req, timeout=max(0.001, left - 0.5))
    try:
        return asyncio.run(request(path, req, timeout=left))
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError("no park-gateway daemon listens on %s" % path, EXIT_NO_DAEMON, "no_daemon",
                       "is it running? `systemctl status park-gateway`")
    except PermissionError:
        raise CliError("no permission for %s" % path, EXIT_NO_DAEMON, "no_permission",
                       "run as the gateway user or a member of its api_group")
    except TimeoutError:
        raise CliError("no answer from the daemon within %s; nothing more will be done for this request"
                       % _span(getattr(args, "timeout", None) or duration(DEFAULT_TIMEOUT)), reason="timeout",
                       hint="give more time with --timeout DURATION")
    except ConnectionError as e:
        raise CliError("lost the connection to the daemon on %s: %s" % (path, e), reason="connection_lost")
    except ApiError as e:
        raise _api_error(e, req)


def _api_error(e, req: dict) -> CliError:
    """The daemon's refusal with its code once and a hint in this tool's words (flags, not API fields)."""
    message = e.message
    if message.startswith(e.code + ": "):  # an older daemon put the code into the message
        message = message[len(e.code) + 2:]
    hint = _HINTS.get(e.code, "")
    if e.code == "offline" and req.get("op") == "command":
        message = "%s is not reachable now" % req["id"]
        hint = "to wait for it, add --queue-for DURATION (e.g. 1h)"
    return CliError(message, reason=e.code, hint=hint)


def _span(s: float) -> str:
    for unit in ("d", "h", "m"):
        if s >= _UNITS[unit] and s % _UNITS[unit] == 0:
            return "%d%s" % (s // _UNITS[unit], unit)
    return "%gs" % s


def cmd_status(args) -> int:
    st = _call(args, {"op": "status"})
    _out(args, st, status_text(st))
    return 0


def status_text(st: dict) -> str:
    """The whole status in words: gateway, backbone, clock, devices, links, each site's lights, bins, lockers."""
    bb = st["backbone"]
    lines = ["park-gateway %s, up %s" % (st.get("version", "?"), readable.span(st["uptime_s"])),
             "backbone: %s %s, outbox %d messages (oldest %s), %d published, %d dropped" % (
                 bb.get("broker"), "connected" if bb.get("connected") else "DISCONNECTED",
                 bb.get("outbox_depth", 0), readable.span(bb["oldest_age_s"]) if bb.get("oldest_age_s") else "-",
                 bb.get("published", 0), bb.get("dropped_total", 0)),
             _clock_line(st.get("clock")),
             "devices: %d online, %d offline, %d total" % (
                 st["devices"]["online"], st["devices"]["offline"], st["devices"]["total"]),
             "links:"]
    for lk in st["links"]:
        c = lk["counters"]
        drops = sum(v for k, v in c.items() if k.startswith("drop_"))
        lines.append("  %-10s %-6s %-4s %d frames received, %d dropped%s" % (
            lk["name"], lk["kind"], "up" if lk["connected"] else "DOWN", c.get("rx_frames", 0), drops,
            "" if lk["connected"] else "  (%s)" % lk["last_error"]))
    ctl = st.get("control") or {}
    light, pickups, lockers = ctl.get("lighting", {}), ctl.get("pickups", {}), ctl.get("lockers", {})
    for site in sorted(set(light) | set(pickups)):
        lines.append("site %s:" % site)
        sl = light.get(site)
        if sl is not None:
            lines.append("  lights: %s, level cap %s%%; lamp faults: %s" % (
                "dark" if sl.get("dark") else "daylight", sl.get("cap"), ", ".join(sl.get("lamp_faults") or [])
                or "none"))
        lines.append("  pickups: " + _pickup_words(pickups.get(site, [])))
    for lid, k in sorted(lockers.items()):
        lines.append("locker %s: on loan %s; overdue %s; open %s" % (
            lid, _comps(k.get("on_loan")), _comps(k.get("overdue")), _comps(k.get("open"))))
    if st.get("faults"):
        lines.append("contained faults: " + ", ".join("%s %d" % kv for kv in sorted(st["faults"].items())))
    if st["counters"]:
        lines.append("session: " + ", ".join("%s %d" % kv for kv in sorted(st["counters"].items())))
    return "\n".join(lines)


def _comps(v) -> str:
    if isinstance(v, int):
        return readable.compartments(v)
    return ", ".join(str(c) for c in v) if v else "none"


def _pickup_words(items: list[dict]) -> str:
    if not items:
        return "none"
    return ", ".join("%s (%s%s)" % (p["id"], p["level"].replace("_", " "),
                                    ", %d%%" % p["fill"] if p.get("fill") is not None else "") for p in items)


def _clock_line(clock: dict | None) -> str:
    if not clock:
        return "clock: unknown (daemon too old to say)"
    if clock.get("synchronised"):
        return "clock: synchronised (%s)" % clock.get("source")
    return "clock: NOT synchronised: devices get no time until it is (NTP, or trust_clock in [gateway])"


def cmd_devices(args) -> int:
    devs = _call(args, {"op": "devices"})
    rows = ["%-8s %-16s %-10s %-8s %-10s %s" % ("ID", "ROLE", "SITE", "STATE", "FW", "LAST SEEN")]
    for d in devs:
        rows.append("%-8s %-16s %-10s %-8s %-10s %s" % (
            d["id"], d["role"], d["site"], "online" if d["online"] else "OFFLINE", readable.version(d.get("fw")),
            readable.age(d["last_seen"])))
    _out(args, devs, "\n".join(rows))
    return 0


def device_text(d: dict) -> str:
    """One device for a person: versions, ages and names; its pending commands with their ids."""
    lines = ["%s: %s at %s%s, %s" % (d["id"], d["role"].replace("_", " "), d["site"],
                                     " (%s)" % d["position"] if d.get("position") else "",
                                     "online" if d.get("online") else "OFFLINE")]
    if "fw" in d or "last_seen" in d:
        lines.append("firmware %s; last seen %s%s" % (readable.version(d.get("fw")), readable.age(d.get("last_seen")),
                                                    " on link %s" % d["link"] if d.get("link") else ""))
    if d.get("heartbeat"):
        hb = d["heartbeat"]
        lines.append("heartbeat: %s" % (readable.message(dict(hb, type="heartbeat")) if isinstance(hb, dict) else hb))
    if "state" in d:
        lines.append("last report: " + readable.report(d.get("state") or {}))
    for c in d.get("commands") or []:
        lines.append("command %s: %s, %s" % (c.get("id"), c.get("type"), c.get("state")))
    return "\n".join(lines)


def _open_registry(path: str, create: bool):
    """The registry at path; a missing file only with create (a typo must not start a new registry), and
    a file that is not a registry is refused before anything is written to it."""
    import sqlite3
    from urllib.parse import quote

    from gateway.registry import Registry

    if not os.path.exists(path):
        if not create:
            raise CliError("no registry at %s (mistyped? give --create to start a new one)" % path,
                           reason="no_registry")
        return Registry(path)
    try:
        db = sqlite3.connect("file:%s?mode=ro" % quote(os.path.abspath(path)), uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error as e:
        raise CliError("%s is not a park-gateway registry (%s)" % (path, e), reason="not_a_registry")
    if "devices" not in tables:
        raise CliError("%s is not a park-gateway registry (an SQLite file without a devices table)" % path,
                       reason="not_a_registry")
    return Registry(path)


def _import_check(reg, path: str) -> list[dict]:
    """What `device import FILE` would do to each entry, changing nothing: the same file checks as
    the import, then per entry whether the id is registered, with the same key, and who owns the key
    (keys are compared here and never shown)."""
    import hmac
    import stat

    from gateway.registry import UnknownDevice, validate

    if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        raise CliError("%s: holds keys but is readable by others; chmod 600 it" % path, reason="registry_error")
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise CliError("%s:%d: not valid JSON: %s" % (path, e.lineno, e.msg), reason="registry_error")
    out = []
    for i, d in enumerate(doc if isinstance(doc, list) else [doc]):
        try:
            key = bytes.fromhex(d["key_hex"])
            validate(d["id"], d["role"], d["site"], key, d.get("position"))
        except (TypeError, KeyError, ValueError) as e:
            raise CliError("%s: entry %d: %s" % (path, i, e), reason="invalid_device")
        owner = next((o.id for o in reg.all() if hmac.compare_digest(o.key, key)), None)
        try:
            have = reg.get(d["id"])
        except UnknownDevice:
            have = None
        out.append({"id": d["id"], "registered": have is not None,
                    "same_key": have is not None and hmac.compare_digest(have.key, key), "key_owner": owner})
    return out


def cmd_device(args) -> int:
    import sqlite3

    from gateway.registry import (DuplicateDevice, DuplicateKey, InvalidDevice, RegistryError, UnknownDevice,
                                  write_private)
    from protocol.keyfile import KeyFileError, read_key_file

    w = args.words
    if w[0] not in ("add", "import", "remove", "export"):
        if len(w) != 1:
            raise CliError("usage: park-gateway device ID", EXIT_USAGE)
        if not args.registry:
            d = _call(args, {"op": "device", "id": w[0]})
            _out(args, d, device_text(d))
            return 0
        with _open_registry(args.registry, False) as reg:
            try:
                d = dict(reg.get(w[0]).public(), registered=True)
            except UnknownDevice:
                raise CliError("no device %r in %s" % (w[0], args.registry), reason="unknown_device",
                               hint=_HINTS["unknown_device"])
            _out(args, d, device_text(d))
        return 0
    cfg = None if args.registry and w[0] != "add" else _config(args)
    path = args.registry or cfg.registry_path
    try:
        # the config's own registry may be started; a --registry PATH (a typo?) only with --create
        with _open_registry(path, (args.create or not args.registry) and w[0] in ("add", "import")) as reg:
            if w[0] == "add":
                if len(w) != 2 or not (args.role and args.site and args.key_file):
                    raise CliError("usage: park-gateway device add ID --role ROLE --site SITE --key-file FILE", EXIT_USAGE)
                if args.site not in cfg.sites:
                    raise CliError("site %r is not in %s (sites: %s)" % (args.site, cfg.path, ", ".join(cfg.sites)), EXIT_USAGE)
                key = read_key_file(args.key_file)
                dev = reg.add(w[1], args.role, args.site, key, args.position, replace=args.replace)
                result = {"added": [dev.id]}
            elif w[0] == "import":
                if len(w) != 2:
                    raise CliError("usage: park-gateway device import FILE", EXIT_USAGE)
                if args.check:
                    _out(args, {"registry": path, "check": _import_check(reg, w[1])})
                    return 0
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
    except DuplicateDevice as e:
        raise CliError(str(e), reason="duplicate_device")
    except DuplicateKey as e:
        raise CliError(str(e), reason="duplicate_key")
    except UnknownDevice as e:
        raise CliError(str(e), reason="unknown_device")
    except InvalidDevice as e:
        raise CliError(str(e), reason="invalid_device")
    except KeyFileError as e:
        raise CliError(str(e), reason="bad_key_file", hint=e.hint)
    except (RegistryError, OSError, sqlite3.Error) as e:
        raise CliError(str(e), reason="registry_error")
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
    from gateway.api import ApiError, tail

    async def go():
        n = 0
        async for ev in tail(_socket(args), args.id, timeout=_left(args)):
            if getattr(args, "json", False):
                print(json.dumps(ev, default=str), flush=True)
            else:
                print("%s %-9s %-6s %s" % (time.strftime("%H:%M:%S"), "ALERT" if ev["kind"] == "alert" else ev["kind"],
                                           ev.get("device", ""), event_words(ev)), flush=True)
            n += 1
            if args.count and n >= args.count:
                return

    try:
        asyncio.run(go())
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError("no park-gateway daemon listens on %s" % _socket(args), EXIT_NO_DAEMON, "no_daemon",
                       "is it running? `systemctl status park-gateway`")
    except PermissionError:
        raise CliError("no permission for %s" % _socket(args), EXIT_NO_DAEMON, "no_permission",
                       "run as the gateway user or a member of its api_group")
    except TimeoutError:
        raise CliError("the daemon did not start the tail within %s" % _span(_left(args)), reason="timeout")
    except ApiError as e:
        raise _api_error(e, {"op": "tail"})
    except KeyboardInterrupt:
        pass
    return 0


def event_words(ev: dict) -> str:
    """A gateway event (tail, logs, dashboard) in words, without the kind and device."""
    k = ev.get("kind")
    if k == "alert":
        return readable.alert(ev["alert"], ev.get("body") or {})
    if k in ("event", "telemetry"):
        return readable.message(ev.get("msg") or {})
    if k == "hello":
        return "hello, firmware %s" % readable.version(ev.get("fw"))
    if k == "reboot":
        return "rebooted (boot %s)" % ev.get("boots")
    if k == "resync":
        return "counter resynchronised from %s" % ev.get("floor")
    if k == "update":
        return "update %s: %s, %s/%s B%s" % (ev.get("version"), ev.get("state"), ev.get("bytes"), ev.get("size"),
                                            " (%s)" % ev["reason"] if ev.get("reason") else "")
    if k == "rollout":
        return "rollout %s %s%s" % (ev.get("rollout"), ev.get("step"), " (%s)" % ev["reason"] if ev.get("reason") else "")
    return ""


def _command(args, device_id: str, cmd: dict) -> int:
    req = {"op": "command", "id": device_id, "command": cmd}
    if getattr(args, "queue_for", 0):
        req["queue_for"] = args.queue_for
    res = _call(args, req)
    if isinstance(res, dict) and res.get("result") == "queued":
        text = ("%s: %s queued: it is sent when %s answers within %s, else dropped (`park-gateway device %s` "
                "shows it with its id; `park-gateway cancel %s ID` cancels it)"
                % (device_id, cmd["type"], device_id, _span(args.queue_for), device_id, device_id))
    else:
        text = "%s: %s acknowledged" % (device_id, cmd["type"])
    _out(args, res, text)
    return 0


def cmd_config(args) -> int:
    w = args.words
    if w[0] == "check":
        from gateway import preflight

        path = w[1] if len(w) > 1 else getattr(args, "config", None)
        try:
            cfg = config_mod.load(path)
            warnings = preflight.check(cfg, starting=False)
        except config_mod.ConfigError as e:
            doc = error_doc("bad_config", str(e), "docs/operations.md describes every key")
            doc["error"].update(file=e.file, line=e.line, key=e.key)
            _out(args, doc, str(e))
            return EXIT_USAGE
        summary = {"ok": True, "file": cfg.path, "sites": sorted(cfg.sites), "links": [lk.name for lk in cfg.links],
                   "state_dir": cfg.state_dir, "api_socket": cfg.api_socket,
                   "broker": "%s:%d" % (cfg.uplink.host, cfg.uplink.port),
                   "warnings": ["%s: %s" % (p.key, p.message) for p in warnings]}
        text = "\n".join(["%s: OK (%d sites, %d links)" % (cfg.path, len(cfg.sites), len(cfg.links))]
                         + ["%s: warning: %s: %s" % (cfg.path, p.key, p.message) for p in warnings])
        _out(args, summary, text)
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


def cmd_token(args) -> int:
    """Offline: sign a token with the locker's booking key; no daemon is needed and the key is never shown."""
    from gateway import tokens

    try:
        path = args.key_file or tokens.key_path(_config(args).state_dir, args.locker)
        nbf = tokens.parse_time(args.not_before, "--from")
        exp = tokens.parse_time(args.until, "--until")
        tok = tokens.issue(tokens.read_booking_key(path), args.locker, args.comp, nbf, exp, args.id)
    except tokens.TokenRequestError as e:
        raise CliError(e.message, EXIT_USAGE if e.code == "bad_value" else EXIT_FAIL, e.code, e.hint)
    fmt = "%Y-%m-%d %H:%M %Z"
    _out(args, tok, "%s\nlocker %s compartment %d, token id %d, valid %s to %s" % (
        tok["token_hex"], tok["locker"], tok["comp"], tok["id"], time.strftime(fmt, time.localtime(nbf)),
        time.strftime(fmt, time.localtime(exp))))
    return 0


def cmd_operator(args) -> int:
    """Dashboard logins: scrypt hashes in an owner-only file; there is no default operator or password."""
    import getpass

    from gateway.web import auth

    path = _config(args).web.operators_file
    try:
        if args.action == "list":
            names = sorted(auth.load(path))
            _out(args, {"operators": names, "file": path}, "\n".join(names) or "no operators (the dashboard only shows)")
            return 0
        if not args.name:
            raise CliError("usage: park-gateway operator %s NAME" % args.action, EXIT_USAGE, "usage")
        if args.action == "remove":
            auth.remove(path, args.name)
            _out(args, {"removed": args.name}, "operator %s removed (logged-in sessions end at the next restart)"
                 % args.name)
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("password for %s: " % args.name)
            if getpass.getpass("again: ") != password:
                raise CliError("the passwords differ; nothing changed", EXIT_USAGE, "bad_value")
        auth.add(path, args.name, password, replace=args.replace)
    except auth.OperatorError as e:
        raise CliError(str(e), EXIT_USAGE if args.action == "add" else EXIT_FAIL, "bad_operator",
                       "`park-gateway operator list` shows who exists")
    _out(args, {"added": args.name, "file": path}, "operator %s can log in to the dashboard" % args.name)
    return 0


def cmd_run(args) -> int:
    from gateway.daemon import serve
    from gateway.statelock import AlreadyRunning

    cfg = _config(args)
    # under systemd the journal stamps each line itself
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=cfg.log_level.upper(), format=stamp + "%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(cfg))
    except config_mod.ConfigError as e:  # preflight at start: names file and key
        raise CliError(str(e), EXIT_USAGE)
    except AlreadyRunning as e:
        raise CliError(str(e), EXIT_FAIL) from None
    except KeyboardInterrupt:
        pass
    return 0


def main(argv=None) -> int:
    asked = time.monotonic()
    args = build_parser().parse_args(argv)
    args.asked = asked
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
            pk = _call(args, {"op": "pickups", "site": args.site})
            todo = {site: items for site, items in pk.items() if items}
            _out(args, pk, "\n".join("%s: %s" % (site, _pickup_words(items)) for site, items in sorted(todo.items()))
                 or "nothing to collect")
            return 0
        if c == "token":
            return cmd_token(args)
        if c == "operator":
            return cmd_operator(args)
        if c == "update":
            return cmd_update(args)
        if c == "cancel":
            res = _call(args, {"op": "cancel", "id": args.id, "command": args.command_id})
            _out(args, res, "%s: command %s cancelled (it will not be sent)" % (args.id, args.command_id))
            return 0
    except CliError as e:
        return _fail(args, str(e), e.code, e.reason, e.hint)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - an operator gets one line, not a traceback
        # the daemon's traceback goes to the journal (it is a bug to report); a tool's only at debug level
        logging.getLogger("park.cli").log(logging.ERROR if args.cmd == "run" else logging.DEBUG,
                                          "unexpected error", exc_info=True)
        return _fail(args, "unexpected %s: %s (please report it with the command you ran)"
                     % (type(e).__name__, e), EXIT_FAIL)
    return EXIT_USAGE


def error_doc(code: str, message: str, hint: str = "") -> dict:
    """The one error shape of every tool and the backbone's cmd/res: {ok: false, error: {code, message, hint}}."""
    return {"ok": False, "error": {"code": code, "message": message, "hint": hint or None}}


def _fail(args, message: str, code: int, reason: str | None = None, hint: str = "") -> int:
    """One line on stderr (`park-gateway: CODE: message (hint)`, the code when there is a specific one),
    or with --json the one error document on stdout."""
    if getattr(args, "json", False):
        print(json.dumps(dict(error_doc(reason or _REASONS.get(code, "failed"), message, hint), exit=code)))
    else:
        print("park-gateway: %s%s%s" % (reason + ": " if reason else "", message, " (%s)" % hint if hint else ""),
              file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
