"""The runtime's main loop: links a started App to the gateway and supervises it.

common.start builds it (boot counter first, then the App). Then one cooperative
loop: poll the link, step the app when it asked to be stepped, send heartbeats
and telemetry, answer commands and config, sleep, feed the watchdog only when
the app step returned normally. See docs/firmware.md.
"""

import gc
import json
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio  # type: ignore[no-redef]

from protocol import codes, messages

from common import VERSION, clock, hal
from common.bootcount import BootCount
from common.errors import CommandError, ConfigError, ProvisionError
from common.link import open_link
from common.session import Session

BATT_MIN_MV = 1000
"""Below this a battery reading is no reading: an ESP32 browns out near 2.5 V."""
MAX_APP_ERRORS = 3
"""Consecutive failed app steps after which the watchdog is starved (-> reset)."""


class Runtime:
    """What an App sees as `rt` (the contract in docs/firmware.md)."""

    def __init__(self, dev, key, store, app_cls, cause=None, transport=None, count_boot=True, boot=None):
        self.dev = dev
        self.id = dev.id
        self.store = store
        self.hal = hal.Hal(dev.pins)
        self._rtc = dev.rt
        self.cause = hal.reset_cause() if cause is None else cause
        self.boot = boot or BootCount(store, self.cause, self._rtc["safe_boots"], count_boot)
        self.safe = self.boot.safe
        self.app_cls = app_cls
        self.fw = getattr(app_cls, "FW", VERSION)
        self.started_ms = clock.ticks_ms()
        self._tick = self.started_ms
        self.up_ms = 0  # since boot, summed per step: ticks wrap after 12.4 days, uptime must not
        self.gateway_seen_ms = None
        self.logs = []
        self.app = None
        self.app_errors = 0
        self.steps = 0
        self.healthy = True
        self.checks_ok = True
        self._ota = "otaboot" in sys.modules  # main.py loaded it: this board has taken an update (common.ota)
        self._faults = []
        self._sleep_ms = None
        self._reboot_at = None
        self._welcome_ms = None
        self._hb_due = clock.ticks_ms()
        self._batt = None
        self._gc_mark = 0
        from common import config  # boot only: common.start forgets it afterwards
        config.check_schema(app_cls.SCHEMA, "app")
        try:
            self.cfg = config.validate(app_cls.SCHEMA, dev.app, where="app.")
        except ConfigError as e:
            self.log("config refused at boot: %s; defaults and safe mode" % e, keep=True)
            self.cfg = config.defaults(app_cls.SCHEMA)
            self.safe = True
            self._faults.append((codes.F_CONFIG, 0))
        if self.safe and self.boot.fast > self._rtc["safe_boots"]:
            self.log("safe mode after %d fast boots" % self.boot.fast, keep=True)
            self._faults.append((codes.F_SAFE_MODE, self.boot.fast))
        role = messages.ROLE_IDS.get(app_cls.ROLE)
        if role is None or app_cls.ROLE != dev.role:
            raise ProvisionError("config role %r does not match the firmware's %r" % (dev.role, app_cls.ROLE))
        caps = getattr(app_cls, "caps", None)
        caps = app_cls.CAPS if caps is None else caps(dev.pins, self._rtc, self.cfg)
        hello = {"type": "hello", "role": role, "fw": self.fw, "caps": caps | _ota_caps()}
        self.link = transport or open_link(dev.link, dev.kid)
        if self.link.fault is not None:
            self.log("link: the %s radio cannot be used (fault radio, %d); serial if wired"
                     % (dev.link["kind"], self.link.fault[1]), keep=True)
            self._faults.append(self.link.fault)
        self.session = Session(dev.kid, key, self.link, store, hello, dev.link, self._command, self._welcomed)
        self.retained = _load_retained(store) if self.cause == hal.CAUSE_DEEPSLEEP else {}

    # ---- the App-facing API ----

    def ticks_ms(self):
        return clock.ticks_ms()

    def now(self):
        """Unix seconds, or None while the time is not valid."""
        return clock.now()

    def send(self, msg):
        """Send telemetry (not acked); returns its sequence number."""
        return self.session.send(msg)

    def event(self, msg, durable=False, on_ack=None):
        """Queue an acked event; the runtime sets eid (first sequence number) and t, and
        retransmits it with backoff until the gateway answers. durable: kept on flash
        until then; every pending event is made durable before a deep sleep or reboot.
        on_ack(msg, nack) runs when the answer arrives (nack None for an ack)."""
        if msg.get("t") is None:
            msg["t"] = clock.now() or 0
        t = msg["type"]
        if t == "alarm":  # SPEC 5: alarm values saturate at -65536..65535
            msg["value"] = max(-0x10000, min(msg["value"], 0xFFFF))
        if t == "alarm" or t == "fault":
            self.log("%s code %d value %d" % (t, msg["code"], msg["value"]))
        self.session.event(msg, clock.ticks_ms(), durable, on_ack)

    def log(self, text, keep=False):
        """Console and a RAM ring of 16 lines; keep=True also appends to /state/log.txt."""
        print(text)
        self.logs.append(text)
        if len(self.logs) > 16:
            self.logs.pop(0)
        if keep and self._rtc["log_kb"]:
            flash_log(self.store.root, text, self._rtc["log_kb"] * 1024)

    @property
    def link_up(self):
        """True once a welcome arrived (acked events flow, downlink is accepted)."""
        return self.session.welcomed

    def battery_mv(self):
        """Battery voltage (mV) from ADC "batt" and rt.batt_div, or None on mains power and when
        there is no reading (an open input reads ~0 V, which a running board cannot have)."""
        div = self._rtc["batt_div"]
        if not div or not self.hal.has("batt"):
            return None
        if self._batt is None:
            self._batt = self.hal.adc("batt")
        mv = self._batt.read_uv() * div // 1000000
        return mv if mv >= BATT_MIN_MV else None

    def sleep_request(self, ms):
        """Deep-sleep for ms once pending events are acked (or rt.awake_s is over)."""
        self._sleep_ms = ms

    def retain(self, key, value):
        """Keep a small JSON value across deep sleep in RTC memory (lost on power loss and on
        any other reset); read it back from rt.retained after the wake."""
        self.retained[key] = value

    def pending_events(self):
        return len(self.session.events)

    # ---- boot and loop ----

    def start(self):
        fw = self.fw
        self.log("park-edge %s %s fw %d.%d.%d boot %d cause %d%s" % (
            self.dev.id, self.app_cls.ROLE, fw // 10000, fw // 100 % 100, fw % 100, self.boot.boots,
            self.cause, " SAFE MODE" if self.safe else ""))
        self.wdt = hal.watchdog(self._rtc["wdt_ms"])
        try:
            self.app = self.app_cls(self)
            self.app.start(self.safe)
        except Exception as e:
            self._crash("app start", e)
            if not self.safe:
                raise
            self.app = None  # safe mode and still failing: link only
        try:
            tests = self.app.selftest() if self.app and self.cause != hal.CAUSE_DEEPSLEEP else ()
            for name, ok, detail in tests:
                if not ok:
                    self.checks_ok = False
                    self.log("selftest %s: %s" % (name, detail))
        except Exception as e:
            self.checks_ok = False
            self._crash("selftest", e)
        now = clock.ticks_ms()
        self._app_due = now
        if self.cause == hal.CAUSE_DEEPSLEEP:
            left = self._hb_left()
            self._hb_due = clock.ticks_add(now, left)
            if self.session.events or left <= 0:
                self.session.start_hello(now)
        else:
            self._hb_due = clock.ticks_add(now, self.session.hb_s * 1000)
            self.session.start_hello(now)
        for code, value in self._faults:
            self.event({"type": "fault", "code": code, "value": value})
        if self._ota:
            from common import ota
            ota.started(self)

    def _hb_left(self):
        v = self.retained.get("_hb")
        return v if type(v) is int else 0

    def _welcomed(self, msg, now):
        if not clock.set_time(msg["time"]):
            self.log("welcome time %d not valid; keeping RTC" % msg["time"])
        if self._welcome_ms is None:
            self.log("joined the gateway (heartbeat every %d s)" % msg["hb"])
            if self.cause != hal.CAUSE_DEEPSLEEP:
                self._hb_due = now  # first welcome after a reset: report diagnostics at once
            if self._ota:
                from common import ota
                ota.joined(self)
        self._welcome_ms = now

    def step(self, now):
        """One loop iteration; returns ms to wait before the next."""
        self.up_ms += max(clock.ticks_diff(now, self._tick), 0)
        self._tick = now
        s = self.session
        if s.events and not s.welcomed and not s.hello_pending:
            s.start_hello(now)  # a sleeper wakes without a session: events need one for their acks
        if self.link.new_peer() and not s.hello_pending:
            s.start_hello(now)  # a new peer on a radio link knows nothing of this session
        wait = s.poll(now)
        self.gateway_seen_ms = s.seen_ms
        if self.app is not None and clock.ticks_diff(now, self._app_due) >= 0:
            try:
                w = self.app.step(now)
                self.app_errors = 0
                self._app_due = clock.ticks_add(now, w if type(w) is int and w >= 0 else 1000)
            except Exception as e:
                self.app_errors += 1
                self._crash("app step", e)
                self._app_due = clock.ticks_add(now, 1000)
                if self.safe:
                    self.app = None
        self.steps += 1
        self.healthy = self.app_errors < MAX_APP_ERRORS
        if self.app is not None:
            wait = min(wait, max(clock.ticks_diff(self._app_due, now), 0))
        if clock.ticks_diff(now, self._hb_due) >= 0:
            self.heartbeat()
            self._hb_due = clock.ticks_add(now, s.hb_s * 1000)
        up = self.up_ms
        if self.healthy and not self.boot.stable and up >= self._rtc["stable_s"] * 1000:
            self.boot.mark_stable()
        retry = self._rtc["safe_retry_s"]
        if self.safe and retry and self.healthy and up >= retry * 1000:
            self.log("safe mode held %d s: rebooting to try normal mode" % retry, keep=True)
            self._reboot_at = now
        if self._reboot_at is not None and clock.ticks_diff(now, self._reboot_at) >= 0:
            self.reboot()
        if self._sleep_ms is not None and self._may_sleep(now, up):
            self.deep_sleep(self._sleep_ms)
        if gc.mem_alloc() > self._gc_mark:
            self._collect()
        if self.wdt is not None and self.healthy:
            self.wdt.feed()
        elif self.wdt is None and not self.healthy:
            self.log("app failing and no watchdog: reset", keep=True)
            hal.reset()
        return min(wait, self.dev.link["poll_ms"])

    def _collect(self):
        """Collect in the idle gap between steps, not in the middle of one (a lock pulse,
        a frame), and keep garbage under rt.gc_kb so the heap stays bounded and measurable."""
        gc.collect()
        self._gc_mark = gc.mem_alloc() + self._rtc["gc_kb"] * 1024

    def _may_sleep(self, now, up):
        s = self.session
        if up >= self._rtc["awake_s"] * 1000:
            return True
        if s.events or s.hello_pending or self.link.busy():
            return False
        if self._welcome_ms is not None and clock.ticks_diff(now, self._welcome_ms) < self._rtc["linger_ms"]:
            return False
        return True

    def heartbeat(self):
        gc.collect()
        st = self.cause & codes.ST_CAUSE_MASK
        if self.safe:
            st |= codes.ST_SAFE_MODE
        if clock.now() is not None:
            st |= codes.ST_TIME_VALID
        if self.app is None:
            st |= codes.ST_LINK_ONLY
        mv = self.battery_mv()
        self.send({"type": "heartbeat", "uptime": min(self.up_ms // 3600000, 0xFFFF),
                   "heap": min(hal.mem_free() // 1024, 255), "boots": self.boot.boots & 0xFF, "status": st,
                   "fw": self.fw, "batt": None if mv is None else min(mv // 20, 255),
                   "dropped": min(self.session.dropped, 255)})
        if self.app is not None:
            try:
                t = self.app.telemetry()
                if t is not None:
                    self.send(t)
            except Exception as e:
                self._crash("telemetry", e)

    def deep_sleep(self, ms):
        self.session.persist_events()
        if not self.safe:
            self.boot.mark_stable()
        self.retained["_hb"] = max(clock.ticks_diff(self._hb_due, clock.ticks_ms()) - ms, 0)
        _save_retained(self.store, self.retained)
        self.link.close()
        hal.deepsleep(ms)

    def reboot(self):
        self.session.persist_events()
        if self.healthy:
            self.boot.mark_stable()
        hal.reset()

    def _crash(self, where, e):
        self.log("%s failed: %r" % (where, e), keep=True)
        sys.print_exception(e)

    # ---- downlink commands (already authenticated and fresh) ----

    def _command(self, msg):
        """Carry out one downlink command; the console says what it was and how it ended."""
        r = self._do_command(msg)
        if r is None:
            self.log("command %s: done" % msg["type"])
        else:
            self.log("command %s: refused, code %d field %r" % (msg["type"], r[0], r[1]))
        return r

    def _do_command(self, msg):
        t = msg["type"]
        if t == "config":
            return self._config(msg["values"])
        if t == "time":
            return None if clock.set_time(msg["time"]) else (codes.E_BAD_VALUE, "time")
        if t == "reboot":
            self._reboot_at = clock.ticks_add(clock.ticks_ms(), msg["delay"] * 1000)
            return None
        if t[:7] == "update_":  # also in safe mode: an update is how a broken release is fixed
            from common import ota
            return ota.command(self, msg)
        if self.app is None or self.safe:
            return (codes.E_NOT_READY, "")
        try:
            self.app.on_command(msg)
        except CommandError as e:
            return (e.code, e.field)
        except ConfigError as e:
            return (codes.E_BAD_VALUE, e.field)
        return None

    def _config(self, values):
        """Validate all, let the app check and apply, persist; any refusal keeps the old config."""
        try:
            return self._config_with(values)
        finally:
            forget("common.config", "protocol.rules")  # a rare path: its code leaves the heap again

    def _config_with(self, values):
        if self.app_cls is None:
            return (codes.E_NOT_READY, "")  # the App was dropped for memory (link only)
        from common import config
        old = self.cfg
        try:
            new = config.validate(self.app_cls.SCHEMA, values, base=old)
        except ConfigError as e:
            return (codes.E_BAD_VALUE, e.field)
        try:
            if self.app is not None:
                self.app.on_config(new)
        except ConfigError as e:
            return (codes.E_BAD_VALUE, e.field)
        except CommandError as e:
            return (e.code, e.field)
        try:
            config.save_app(config.PATH, self.dev, new)
        except OSError as e:
            self.log("config not saved: %r" % e, keep=True)
            if self.app is not None:
                self.app.on_config(old)
            return (codes.E_INTERNAL, "")
        self.cfg = new
        return None

    async def run(self):
        while True:
            await clock.sleep_ms(self.step(clock.ticks_ms()))


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


async def _serve(rt):
    while True:
        try:
            await rt.run()
        except MemoryError as e:
            if not _out_of_memory(rt, e):
                return
        except Exception as e:  # a runtime bug
            failed("runtime", e, rt.safe)
            return


def _out_of_memory(rt, e):
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
        rt.event({"type": "fault", "code": codes.F_MEMORY, "value": gc.mem_alloc()}, durable=True)
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


def serve(rt):
    """Run a started Runtime's loop (from /main.py, after common.start.main): asyncio.run where it
    exists; on the WebAssembly port the JavaScript event loop drives the task."""
    if rt is None:
        return
    run = getattr(asyncio, "run", None)
    if run is not None:
        run(_serve(rt))
    else:
        asyncio.create_task(_serve(rt))


def forget(*names):
    """Drop modules from sys.modules and their package, so that once nothing else refers to
    them the collector gets their code back (boot-only and rare paths; docs/firmware.md#footprint)."""
    for n in names:
        sys.modules.pop(n, None)
        i = n.rfind(".")
        pkg = sys.modules.get(n[:i])
        if pkg is not None and n[i + 1:] in pkg.__dict__:
            delattr(pkg, n[i + 1:])


def _load_retained(store):
    raw = hal.rtc_memory()
    if raw is None:
        d = store.get("retained")
    else:
        try:
            d = json.loads(raw) if raw else None
        except ValueError:
            d = None
    return d if type(d) is dict else {}


def _save_retained(store, d):
    """RTC slow memory survives deep sleep without a flash write; flash where a port has none."""
    raw = json.dumps(d)
    if len(raw) > 2048 or hal.rtc_memory(raw.encode()) is None:
        store.put("retained", d)


def _ota_caps():
    """CAP_OTA_IMAGE where esp32.Partition has an OTA partition to update into."""
    try:
        from esp32 import Partition
        Partition(Partition.RUNNING).get_next_update()  # type: ignore[arg-type]  # stub lacks the int id
        return codes.CAP_OTA_IMAGE
    except Exception:  # no esp32 module, or no OTA partitions (OSError)
        return 0


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


def selftest(*args):
    """The App's selftest() on the real pins from the REPL (park-device selftest); see common.selftest."""
    from common import selftest as st
    return st.run(*args)
