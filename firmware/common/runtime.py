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
    from micropython import const
except ImportError:  # CPython (type checks)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from protocol.codes import (CAUSE_DEEPSLEEP, E_BAD_VALUE, E_NOT_READY, ST_CAUSE_MASK, ST_LINK_ONLY, ST_SAFE_MODE,
                            ST_TIME_VALID)

from common import SETUP_ONLY, Device, clock, forget, hal
from common.errors import CommandError, ConfigError
from common.link import Link
from common.session import Session
from common.store import Store

_BATT_MIN_MV = const(1000)  # below this a battery reading is no reading: an ESP32 browns out near 2.5 V
_MAX_APP_ERRORS = const(3)  # consecutive failed app steps after which the watchdog is starved (-> reset)
_JOB_PAUSE_MS = const(5)  # longest wait between two items of Runtime.job (link polled, watchdog fed)


class BootCount:
    """Boot counter and fast-reboot detection: the way into safe mode. Every reset (not a
    deep-sleep wake) counts a boot and a "fast" boot; a run that stays healthy for stable_s,
    finishes a sleep cycle or reboots on purpose clears the fast count. More than safe_boots
    fast boots in a row means something in the normal path crashes the device: it then runs
    only its safe behaviour and the link. (Here, not a module of its own: one module fewer.)"""

    def __init__(self, store, cause, safe_boots, count=True):
        self._store = store
        st = store.get("boot")
        if type(st) is not dict:
            st = {"n": 0, "fast": 0}
        self.boots = st.get("n", 0)
        self.fast = st.get("fast", 0)
        self.cause = cause
        if count and cause != CAUSE_DEEPSLEEP:
            self.boots += 1
            self.fast += 1
            self._save()
        self.safe = self.fast > safe_boots
        self.stable = self.fast == 0

    def _save(self):
        self._store.put("boot", {"n": self.boots, "fast": self.fast})

    def mark_stable(self):
        """This run proved healthy: the next reset is not part of a crash loop."""
        if self.fast:
            self.fast = 0
            self._save()
        self.stable = True


class Runtime:
    """What an App sees as `rt` (the contract in docs/firmware.md)."""

    # set by common.start.init_runtime (boot only, so that code leaves the heap after it)
    dev: "Device"
    id: "str"
    store: "Store"
    hal: "hal.Hal"
    _rtc: "dict"
    cause: "int"
    app_cls: "type"
    fw: "int"
    started_ms: "int"
    _tick: "int"
    up_ms: "int"  # since boot, summed per step: ticks wrap after 12.4 days, uptime must not
    gateway_seen_ms: "int | None"
    logs: "list"
    app_errors: "int"
    healthy: "bool"
    checks_ok: "bool"
    _ota: "bool"  # main.py loaded otaboot: this board has taken an update (common.ota)
    _faults: "list"
    _sleep_ms: "int | None"
    _welcome_ms: "int | None"
    _hb_due: "int"
    _gc_mark: "int"
    boot: "BootCount"
    safe: "bool"
    cfg: "dict"
    link: "Link"
    session: "Session"
    retained: "dict"
    _app_due: "int"

    def __init__(self, dev, key, store, app_cls, cause=None, transport=None, count_boot=True, boot=None):
        self.app = None
        self._reboot_at = None
        self.wdt = None
        self.job = None  # a generator the loop advances one item a turn (an update's install: common.ota)
        from common import start  # boot only: the code leaves the heap with common.start
        start.init_runtime(self, dev, key, store, app_cls, cause, transport, count_boot, boot)

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
        there is no reading (an open input reads ~0 V, which a running board cannot have). The
        ADC is set up per reading (a heartbeat's, a bin's wake): no object kept for it."""
        div = self._rtc["batt_div"]
        if not div or not self.hal.has("batt"):
            return None
        mv = self.hal.adc("batt").read_uv() * div // 1000000
        return mv if mv >= _BATT_MIN_MV else None

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
        """Start the App (boot only: the code is common.start's)."""
        from common import start
        start.start_runtime(self)

    def ota(self, name, *args):
        """common.ota's `name`(rt, *args); the module leaves the heap again unless an update is under way."""
        from common import ota
        try:
            return getattr(ota, name)(self, *args)
        finally:
            if ota.idle():
                forget("common.ota", "common.ota_state", "common.ota_rx", "common.otaboot")

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
        if self.job is not None:
            try:
                next(self.job)
                wait = min(wait, _JOB_PAUSE_MS)
            except StopIteration:
                self.job = None
        self.healthy = self.app_errors < _MAX_APP_ERRORS
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
        ms = self._sleep_ms
        if ms is not None and (up >= self._rtc["awake_s"] * 1000 or not (
                s.events or s.hello_pending or self.link.busy() or self._welcome_ms is not None
                and clock.ticks_diff(now, self._welcome_ms) < self._rtc["linger_ms"])):
            # answered (or out of awake time): the events made durable, the heartbeat's wait kept
            s.persist_events()
            if not self.safe:
                self.boot.mark_stable()
            self.retained["_hb"] = max(clock.ticks_diff(self._hb_due, clock.ticks_ms()) - ms, 0)
            raw = json.dumps(self.retained)  # RTC slow memory survives deep sleep; flash where a port has none
            if len(raw) > 2048 or hal.rtc_memory(raw.encode()) is None:
                self.store.put("retained", self.retained)
            self.link.close()
            hal.deepsleep(ms)
        if gc.mem_alloc() > self._gc_mark:
            # in the idle gap between steps, not inside one (a lock pulse, a frame); garbage
            # kept under rt.gc_kb so the heap stays bounded and measurable
            gc.collect()
            self._gc_mark = gc.mem_alloc() + self._rtc["gc_kb"] * 1024
        if self.wdt is not None and self.healthy:
            self.wdt.feed()
        elif self.wdt is None and not self.healthy:
            self.log("app failing and no watchdog: reset", keep=True)
            hal.reset()
        return min(wait, self.dev.link["poll_ms"])

    def heartbeat(self):
        gc.collect()
        st = self.cause & ST_CAUSE_MASK
        if self.safe:
            st |= ST_SAFE_MODE
        if clock.now() is not None:
            st |= ST_TIME_VALID
        if self.app is None:
            st |= ST_LINK_ONLY
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
        """Carry out one downlink command; the console says what it was and how it ended.
        A welcome comes here too (common.session: no answer to it)."""
        t = msg["type"]
        if t == "welcome":
            now = self._tick  # the step's
            if not clock.set_time(msg["time"]):
                self.log("welcome time %d not valid; keeping RTC" % msg["time"])
            if self._welcome_ms is None:
                self.log("joined the gateway (heartbeat every %d s)" % msg["hb"])
                if self.cause != CAUSE_DEEPSLEEP:
                    self._hb_due = now  # first welcome after a reset: report diagnostics at once
                if self._ota:
                    self.ota("joined")
            self._welcome_ms = now
            return None
        r = None
        if t == "config":  # validate all, let the app check and apply, persist (common.rare)
            try:
                from common import rare
                r = rare.config(self, msg["values"])
            finally:
                forget("common.rare", *SETUP_ONLY)  # a rare path: its code leaves the heap again
        elif t == "time":
            if not clock.set_time(msg["time"]):
                r = (E_BAD_VALUE, "time")
        elif t == "reboot":
            self._reboot_at = clock.ticks_add(clock.ticks_ms(), msg["delay"] * 1000)
        elif t[:7] == "update_":  # also in safe mode: an update is how a broken release is fixed
            r = self.ota("command", msg)
        elif self.app is None or self.safe:
            r = (E_NOT_READY, "")
        else:
            try:
                self.app.on_command(msg)
            except CommandError as e:
                r = (e.code, e.field)
            except ConfigError as e:
                r = (E_BAD_VALUE, e.field)
        if r is None:
            self.log("command %s: done" % t)
        else:
            self.log("command %s: refused, code %d field %r" % (t, r[0], r[1]))
        return r

    async def run(self):
        """The loop (common.runtime.serve): out of memory and a runtime bug end it as
        common.rare says; returns when the board stops serving."""
        while True:
            try:
                while True:
                    await clock.sleep_ms(self.step(clock.ticks_ms()))
            except MemoryError as e:
                if not failed("runtime", e, self.safe, self):
                    return
            except Exception as e:  # a runtime bug
                failed("runtime", e, self.safe)
                return


def failed(where, e, safe, rt=None):
    """A crash outside the App (common.rare.failed): reset, or stay in the console in safe mode.
    With rt, the heap ran out (common.rare.out_of_memory): True when the board goes on with the
    link only. If not even common.rare's code fits, a board in normal mode resets (its fast boots
    lead to safe mode) and one in safe mode says so and stays in the console."""
    if rt is not None:
        rt.app = None  # the App's data goes first: the handler's own code has to fit
    gc.collect()
    try:
        from common import rare
    except MemoryError:
        if not safe:
            hal.reset()
        print("park-edge: out of memory; staying in the console (REPL)")
        return False
    r = rare.failed(where, e, safe) if rt is None else rare.out_of_memory(rt, e)
    forget("common.rare")
    return r


def serve(rt):
    """Run a started Runtime's loop (from /main.py, after common.start.main): common.clock.run
    drives it (on a chip without asyncio; on the WebAssembly port as a task of its event loop)."""
    if rt is None:
        return
    clock.run(rt.run())


def flash_log(root, text, limit):
    """Append a line to root/log.txt (common.rare.flash_log); never raises."""
    try:
        from common import rare
    except MemoryError:
        return
    rare.flash_log(root, text, limit)
    forget("common.rare")


def selftest(*args):
    """The App's selftest() on the real pins from the REPL (park-device selftest); see common.selftest."""
    from common import selftest as st
    return st.run(*args)
