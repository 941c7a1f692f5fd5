"""Boot: from the provisioned files to a running Runtime, in an order that cannot brick a board.

The boot is counted and the counter persisted before the role's App is imported,
so any failure of the App, of its import or of the boot itself ends in safe mode
after rt.safe_boots fast boots. A boot that fails in safe mode does not reset
again: it leaves the console (REPL) to the technician with one line on the console
and one in the flash log. A config naming a role whose package is not on the
board is said at once, by name, and never retried.

The boot code is needed once: main() returns the started Runtime and forgets this
module, common.config and protocol.rules, so the collector gets their code back
before the loop runs (common.runtime.serve; docs/firmware.md#footprint).
"""

import os
import sys

from common import hal
from common.bootcount import BootCount
from common.errors import ProvisionError, RoleMissing
from common.runtime import Runtime, failed, flash_log, forget
from common.store import Store

KEY_PATH = "/key.bin"
LOG_ROOT = "/state"


def read_key(key_path=KEY_PATH):
    try:
        with open(key_path, "rb") as f:
            key = f.read()
    except OSError:
        raise ProvisionError("%s is missing: provision the board's link key" % key_path)
    if len(key) != 32:
        raise ProvisionError("%s must hold 32 bytes, not %d" % (key_path, len(key)))
    return key


def _deployed_roles():
    """Role packages on the import path (a directory holding app.py or app.mpy)."""
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
    return out


def load_app(role):
    """The role package's App class (/lib/<role>/app.py); RoleMissing if that package is not deployed."""
    try:
        mod = __import__(role + ".app", None, None, ["App"])
    except ImportError as e:
        if ("'%s'" % role) not in str(e) and ("'%s.app'" % role) not in str(e):
            raise  # the package is there; something it imports is not
        roles = _deployed_roles()
        raise RoleMissing("role module '%s' is missing: the config says role %s, the board has %s; "
                          "deploy the %s firmware or provision the deployed role"
                          % (role, role, ", ".join(roles) if roles else "no role firmware", role))
    return mod.App


def count_boot(dev, store):
    """Count this boot (persisted at once) and decide safe mode, before any App code runs."""
    return BootCount(store, hal.reset_cause(), dev.rt["safe_boots"])


def build(dev, store, count, key_path=KEY_PATH):
    """The App imported and started under a Runtime, after count_boot."""
    rt = Runtime(dev, read_key(key_path), store, load_app(dev.role), cause=count.cause, boot=count)
    rt.start()
    return rt


def boot(config_path=None, key_path=KEY_PATH):
    """Build and start the Runtime from the provisioned files; ProvisionError if the board cannot talk."""
    from common import config
    dev = config.load(config_path or config.PATH)
    store = Store()
    return build(dev, store, count_boot(dev, store), key_path)


def _boot():
    """The started Runtime, or None when the board cannot run (said on the console and in the
    flash log; a crash in normal mode resets)."""
    from common import config
    count = None
    try:
        dev = config.load()
        store = Store()
        count = count_boot(dev, store)
        return build(dev, store, count)
    except RoleMissing as e:
        print("park-edge: cannot start:", e)
        flash_log(LOG_ROOT, "cannot start: %s" % e, 4096)
    except ProvisionError as e:
        print("park-edge: not provisioned:", e)
    except Exception as e:  # a crash during boot
        failed("boot", e, count is not None and count.safe)
    return None


def main():
    """Entry point for /main.py: boot, forget the boot-only modules; the Runtime (None if the
    board cannot run) for common.runtime.serve, which /main.py calls after dropping this module."""
    rt = _boot()
    forget("common.start", "common.config", "protocol.rules")
    return rt
