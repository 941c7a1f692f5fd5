"""Rare paths of the runtime: a config command, a crash, running out of memory, the flash log,
a config naming a role the board does not have.

Imported when one happens and forgotten after (common.forget), so a board in service
does not hold their code (docs/firmware.md#footprint). Keep it small: while loaded it counts
in the day's peak.
"""

import gc
import sys

from common import forget, hal
from common.errors import CommandError, ConfigError, RoleMissing
from protocol.codes import E_BAD_VALUE, E_INTERNAL, E_NOT_READY, F_MEMORY


def config(rt, values):
    """Validate all, let the app check and apply, persist; any refusal keeps the old config."""
    if rt.app_cls is None:
        return (E_NOT_READY, "")  # the App was dropped for memory (link only)
    from common import config
    old = rt.cfg
    try:
        new = config.validate(rt.app_cls.SCHEMA, values, base=old)
    except ConfigError as e:
        return (E_BAD_VALUE, e.field)
    try:
        if rt.app is not None:
            rt.app.on_config(new)
    except ConfigError as e:
        return (E_BAD_VALUE, e.field)
    except CommandError as e:
        return (e.code, e.field)
    try:
        config.save_app(config.PATH, rt.dev, new)
    except OSError as e:
        rt.log("config not saved: %r" % e, keep=True)
        if rt.app is not None:
            rt.app.on_config(old)
        return (E_INTERNAL, "")
    rt.cfg = new
    return None


def failed(where, e, safe):
    """Normal mode: log and reset (a fast boot: enough of them and the next boot is safe).
    Safe mode: log once and stay in the console, so a technician can always get in."""
    sys.print_exception(e)
    ob = sys.modules["otaboot"] if "otaboot" in sys.modules else None
    if safe and not (ob and ob.state and ob.state.get("try")):  # a trial resets: otaboot rolls it back (common.ota)
        text = "%s failed in safe mode: %r; staying in the console (REPL)" % (where, e)
        print("park-edge:", text)
        flash_log("/state", text, 4096)
        return
    flash_log("/state", "%s failed: %r" % (where, e), 4096)
    hal.reset()


def out_of_memory(rt, e):
    """The heap ran out: a durable fault (F_MEMORY, value: bytes still allocated) for the gateway.
    Normal mode: reset into safe mode at once, where the role does less. Safe mode: drop the
    role's App and its code and go on with the link only (True); never a silent console."""
    safe = rt.safe and rt.app_cls is not None
    rt.app = None
    if safe:
        rt.app_cls = None
        role = rt.dev.role
        forget(*[n for n in sys.modules if n == role or n.startswith(role + ".")])
    gc.collect()
    try:
        rt.log("out of memory: %r%s" % (e, "; link only" if safe else ""), keep=True)
        rt.event({"type": "fault", "code": F_MEMORY, "value": gc.mem_alloc()}, durable=True)
        if not safe:
            rt.session.persist_events()
            b = rt.boot
            b.fast = max(b.fast, rt._rtc["safe_boots"])
            b._save()
    except MemoryError:
        pass
    if not safe:
        failed("runtime", e, rt.safe)
    return safe


def flash_log(root, text, limit):
    """Append a line to root/log.txt, rotated to log.old beyond limit bytes; never raises."""
    import os
    path = root + "/log.txt"
    try:
        if os.stat(path)[6] > limit:
            os.rename(path, root + "/log.old")
    except OSError:
        pass
    try:
        with open(path, "a") as f:
            f.write(text)
            f.write("\n")
    except OSError:
        pass


def role_missing(role):
    """RoleMissing for a role whose package is not deployed, naming the role packages that are
    (a directory on the import path holding app.py or app.mpy)."""
    import os
    out = []
    for d in sys.path:
        try:
            names = os.listdir(d or ".")
        except OSError:
            continue
        for n in names:
            if n in ("common", "protocol") or n in out:
                continue
            for f in ("app.mpy", "app.py"):
                try:
                    os.stat("%s/%s/%s" % (d, n, f))
                    out.append(n)
                    break
                except OSError:
                    pass
    return RoleMissing("role module '%s' is missing: the config says role %s, the board has %s; "
                       "deploy the %s firmware or provision the deployed role"
                       % (role, role, ", ".join(out) if out else "no role firmware", role))
