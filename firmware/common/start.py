"""Boot: from the provisioned files to a running Runtime, in an order that cannot brick a board.

The boot is counted and the counter persisted before the role's App is imported,
so any failure of the App, of its import or of the boot itself ends in safe mode
after rt.safe_boots fast boots. A boot that fails in safe mode does not reset
again: it leaves the console (REPL) to the technician with one line on the console
and one in the flash log. A config naming a role whose package is not on the
board is said at once, by name, and never retried.

The boot code is needed once, so it all lives here (with Runtime.__init__'s and
Runtime.start's work: init_runtime, start_runtime): main() returns the started Runtime and
forgets this module, common.config, protocol.rules and protocol.codes, so the collector gets
their code back before the loop runs (common.runtime.serve; docs/firmware.md#footprint).
"""

import json
import sys

from protocol.codes import (CAP_OTA_IMAGE, CAUSE_DEEPSLEEP, F_CONFIG, F_RADIO, F_SAFE_MODE, RADIO_NO_BLE,
                            RADIO_NO_CREDENTIALS, RADIO_NO_WIFI)
from protocol.messages import ROLE_IDS

from common import SETUP_ONLY, VERSION, clock, forget, hal
from common.errors import ConfigError, ProvisionError, RoleMissing
from common.link import Link, UartLink
from common.runtime import BootCount, Runtime, failed, flash_log
from common.session import Session
from common.store import Store

KEY_PATH = "/key.bin"


def read_key(path=KEY_PATH):
    try:
        with open(path, "rb") as f:
            key = f.read()
    except OSError:
        raise ProvisionError("%s is missing: provision the board's link key" % path)
    if len(key) != 32:
        raise ProvisionError("%s must hold 32 bytes, not %d" % (path, len(key)))
    return key


def load_app(role):
    """The role package's App class (/lib/<role>/app.py); RoleMissing (common.rare) if that
    package is not deployed."""
    try:
        mod = __import__(role + ".app", None, None, ["App"])
    except ImportError as e:
        if repr(role) not in str(e) and repr(role + ".app") not in str(e):
            raise  # the package is there; something it imports is not
        from common import rare
        missing = rare.role_missing(role)
        forget("common.rare")
        raise missing
    return mod.App


def count_boot(dev, store):
    """Count this boot (persisted at once) and decide safe mode, before any App code runs."""
    return BootCount(store, hal.reset_cause(), dev.rt["safe_boots"])


def build(dev, store, count, key=KEY_PATH):
    """The App imported and started under a Runtime, after count_boot (key: the key file)."""
    rt = Runtime(dev, read_key(key), store, load_app(dev.role), cause=count.cause, boot=count)
    rt.start()
    return rt


def boot(path=None, key=KEY_PATH):
    """Build and start the Runtime from the provisioned files (path: the config file, key: the key
    file); ProvisionError if the board cannot talk."""
    from common import config
    dev = config.load(path or config.PATH)
    store = Store()
    return build(dev, store, count_boot(dev, store), key)


def main():
    """Entry point for /main.py: boot, forget the boot-only modules; the Runtime for
    common.runtime.serve, which /main.py calls after dropping this module, or None when the
    board cannot run (said on the console and in the flash log; a crash in normal mode resets)."""
    from common import config
    count = rt = None
    try:
        dev = config.load()
        store = Store()
        count = count_boot(dev, store)
        rt = build(dev, store, count)
    except RoleMissing as e:
        print("park-edge: cannot start:", e)
        flash_log("/state", "cannot start: %s" % e, 4096)
    except ProvisionError as e:
        print("park-edge: not provisioned:", e)
    except Exception as e:  # a crash during boot
        failed("boot", e, count is not None and count.safe)
    forget("common.start", *SETUP_ONLY)
    return rt


def init_runtime(rt, dev, key, store, app_cls, cause, transport, count_boot, boot):
    """Runtime.__init__'s work (boot only, so its code leaves the heap with this module):
    the boot counted, the app config validated, the link and the session opened."""
    rt.dev = dev
    rt.id = dev.id
    rt.store = store
    rt.hal = hal.Hal(dev.pins)
    rt._rtc = dev.rt
    rt.cause = hal.reset_cause() if cause is None else cause
    rt.app_cls = app_cls
    rt.fw = getattr(app_cls, "FW", VERSION)
    rt.started_ms = clock.ticks_ms()
    rt._tick = rt.started_ms
    rt.up_ms = 0  # since boot, summed per step: ticks wrap after 12.4 days, uptime must not
    rt.gateway_seen_ms = None
    rt.logs = []
    rt.app_errors = 0
    rt.healthy = True
    rt.checks_ok = True
    rt._ota = "otaboot" in sys.modules  # main.py loaded it: this board has taken an update (common.ota)
    rt._faults = []
    rt._sleep_ms = None
    rt._welcome_ms = None
    rt._hb_due = clock.ticks_ms()
    rt._gc_mark = 0
    rt.boot = boot or BootCount(store, rt.cause, rt._rtc["safe_boots"], count_boot)
    rt.safe = rt.boot.safe
    from common import config  # boot only: main() forgets it afterwards
    config.check_schema(app_cls.SCHEMA, "app")
    try:
        rt.cfg = config.validate(app_cls.SCHEMA, dev.app, where="app.")
    except ConfigError as e:
        rt.log("config refused at boot: %s; defaults and safe mode" % e, keep=True)
        rt.cfg = config.defaults(app_cls.SCHEMA)
        rt.safe = True
        rt._faults.append((F_CONFIG, 0))
    if rt.safe and rt.boot.fast > rt._rtc["safe_boots"]:
        rt.log("safe mode after %d fast boots" % rt.boot.fast, keep=True)
        rt._faults.append((F_SAFE_MODE, rt.boot.fast))
    role = ROLE_IDS.get(app_cls.ROLE)
    if role is None or app_cls.ROLE != dev.role:
        raise ProvisionError("config role %r does not match the firmware's %r" % (dev.role, app_cls.ROLE))
    caps = getattr(app_cls, "caps", None)
    caps = app_cls.CAPS if caps is None else caps(dev.pins, rt._rtc, rt.cfg)
    try:  # CAP_OTA_IMAGE where esp32.Partition has an OTA partition to update into
        from esp32 import Partition
        Partition(Partition.RUNNING).get_next_update()  # type: ignore[arg-type]  # stub lacks the int id
        caps |= CAP_OTA_IMAGE
    except Exception:  # no esp32 module, or no OTA partitions (OSError)
        pass
    hello = {"type": "hello", "role": role, "fw": rt.fw, "caps": caps}
    link = transport
    if link is None:  # the transport link.kind names; if its radio cannot be used, the UART (fault
        cfg = dev.link  # set) when one is wired (link.uart >= 0), else a Link that carries nothing
        kind = cfg["kind"]
        why = 0  # or the RADIO_* code of a radio that cannot be used
        if kind == "ble":
            try:
                from common import ble  # by the package: no "common.ble" name interned where it is not loaded
                link = ble.BleLink(cfg, dev.kid)
            except (ImportError, OSError):  # no bluetooth module, or the controller did not start
                why = RADIO_NO_BLE
        elif kind == "wifi":
            if not cfg["ssid"] or len(cfg["psk"]) < 8 or not cfg["host"]:
                why = RADIO_NO_CREDENTIALS
            else:
                try:
                    from common import wifi
                    link = wifi.WifiLink(cfg)
                except (ImportError, OSError):
                    why = RADIO_NO_WIFI
        if link is None:
            if cfg["uart"] < 0:
                if not why:
                    raise ConfigError("link.uart", "a serial link needs a UART (0..2)")
                link = Link()
            else:
                link = UartLink(cfg)
            if why:
                link.fault = (F_RADIO, why)
    rt.link = link
    if rt.link.fault is not None:
        rt.log("link: the %s radio cannot be used (fault radio, %d); serial if wired"
               % (dev.link["kind"], rt.link.fault[1]), keep=True)
        rt._faults.append(rt.link.fault)
    rt.session = Session(dev.kid, key, rt.link, store, hello, dev.link, rt._command)
    d = None
    if rt.cause == CAUSE_DEEPSLEEP:
        raw = hal.rtc_memory()
        if raw is None:
            d = store.get("retained")
        else:
            try:
                d = json.loads(raw) if raw else None
            except ValueError:
                pass
    rt.retained = d if type(d) is dict else {}


def start_runtime(rt):
    """Runtime.start: build and start the App (safe mode and still failing: link only), self test,
    first hello, the boot's faults."""
    fw = rt.fw
    rt.log("park-edge %s %s fw %d.%d.%d boot %d cause %d%s" % (
        rt.dev.id, rt.app_cls.ROLE, fw // 10000, fw // 100 % 100, fw % 100, rt.boot.boots,
        rt.cause, " SAFE MODE" if rt.safe else ""))
    rt.wdt = hal.watchdog(rt._rtc["wdt_ms"])
    try:
        rt.app = rt.app_cls(rt)
        rt.app.start(rt.safe)
    except Exception as e:
        rt._crash("app start", e)
        if not rt.safe:
            raise
        rt.app = None  # safe mode and still failing: link only
    try:
        tests = rt.app.selftest() if rt.app and rt.cause != CAUSE_DEEPSLEEP else ()
        for name, ok, detail in tests:
            if not ok:
                rt.checks_ok = False
                rt.log("selftest %s: %s" % (name, detail))
    except Exception as e:
        rt.checks_ok = False
        rt._crash("selftest", e)
    now = clock.ticks_ms()
    rt._app_due = now
    if rt.cause == CAUSE_DEEPSLEEP:
        left = rt.retained.get("_hb")
        left = left if type(left) is int else 0
        rt._hb_due = clock.ticks_add(now, left)
        if rt.session.events or left <= 0:
            rt.session.start_hello(now)
    else:
        rt._hb_due = clock.ticks_add(now, rt.session.hb_s * 1000)
        rt.session.start_hello(now)
    for code, value in rt._faults:
        rt.event({"type": "fault", "code": code, "value": value})
    if rt._ota:
        rt.ota("started")
