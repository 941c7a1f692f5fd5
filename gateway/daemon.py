"""The daemon: link -> session -> control loops -> uplink, one asyncio loop.

Ordering that matters (the issue's "lose no event"): a device event goes into
the outbox's next group commit, and the device's ack is written from that
commit's completion callback; commits complete in order, so no ack ever
leaves before the event it acknowledges is on disk. Replay windows and
last-seen times are written to the registry every `persist_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from protocol import messages, names
from protocol.errors import SchemaError

from gateway import config as config_mod
from gateway import preflight, sdnotify, timesync
from gateway.api import ApiServer
from gateway.control import Control
from gateway.links import make_link
from gateway.registry import Registry, RegistryWriter
from gateway.session import CommandFailed, Sessions

log = logging.getLogger("park.daemon")

PERSIST_S = 0.5
SWEEP_S = 1.0


def describe(msg: dict) -> dict:
    """An event body for the backbone: field names, codes as words, device time kept."""
    body = {k: v for k, v in msg.items() if k != "type"}
    t = msg["type"]
    if t == "alarm":
        body["alarm"] = names.ALARMS.get(msg["code"], "code_%d" % msg["code"])
    elif t == "fault":
        body["fault"] = names.FAULTS.get(msg["code"], "code_%d" % msg["code"])
    elif t == "access":
        body["result_name"] = names.ACCESS.get(msg["result"], "code_%d" % msg["result"])
    return body


def event_id(device_id: str, eid: int) -> str:
    """Stable across retransmissions and gateway restarts: the device's eid never repeats for its id."""
    return "%s-%d" % (device_id, eid)


class Out:
    """The sessions' and loops' view of the uplink: queue now, learn durability from the future."""

    def __init__(self, uplink):
        self.uplink = uplink
        self.errors = 0
        self._tel_fut = None  # the outbox hands one future to a whole group commit

    def _failed(self, e: Exception) -> asyncio.Future:
        self.errors += 1
        log.error("uplink refused a message: %s", e)
        f = asyncio.get_running_loop().create_future()
        f.set_exception(e)
        return f

    def event(self, s, msg: dict, now: float) -> asyncio.Future:
        try:
            f = self.uplink.event_nowait(s.site, s.id, msg["type"], describe(msg), event_id(s.id, msg["eid"]), now)
        except Exception as e:  # noqa: BLE001 - typed uplink errors; never ack what is not stored
            return self._failed(e)
        return f

    def alert(self, s, kind: str, body: dict, eid: str, now: float) -> asyncio.Future:
        try:
            f = self.uplink.event_nowait(s.site, s.id, kind, body, eid, now)
        except Exception as e:  # noqa: BLE001
            return self._failed(e)
        f.add_done_callback(_consume)
        return f

    def telemetry(self, s, msg: dict, now: float) -> None:
        try:
            f = self.uplink.telemetry_nowait(s.site, s.id, s.role, msg, now)
        except Exception as e:  # noqa: BLE001
            self._failed(e).add_done_callback(_consume)
            return
        if f is not self._tel_fut:  # one log line per failed commit, not one callback per message
            self._tel_fut = f
            f.add_done_callback(_consume)

    def availability(self, s, online: bool) -> None:
        t = asyncio.ensure_future(self.uplink.availability(s.site, s.id, online))
        t.add_done_callback(_consume)


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("uplink: %s", f.exception())


class Daemon:
    """Owns every part for one run; `status()` and `handle()` serve the API and the backbone."""

    def __init__(self, cfg: config_mod.Config, ble_factory=None, uplink_factory=None):
        self.cfg = cfg
        self.ble_factory = ble_factory
        self.uplink_factory = uplink_factory
        self.started = time.time()
        self.registry: Registry | None = None
        self.uplink = None
        self.sessions: Sessions | None = None
        self.control: Control | None = None
        self.links = []
        self._saved_state = None
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.done.set()

    async def _run(self) -> None:
        from gateway.uplink import Uplink

        cfg = self.cfg
        preflight.check(cfg)
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        self.registry = Registry(cfg.registry_path)
        self.writer = RegistryWriter(cfg.registry_path)
        factory = self.uplink_factory or Uplink
        async with factory(cfg.uplink, cfg.outbox_path) as uplink:
            self.uplink = uplink
            out = Out(uplink)
            self.sessions = sessions = Sessions(cfg, self.registry, out, writer=self.writer)
            def alert(s, kind, body, eid, now):
                sessions._emit({"kind": "alert", "device": s.id, "site": s.site, "alert": kind, "body": body, "id": eid})
                return out.alert(s, kind, body, eid, now)

            self.control = Control(cfg, sessions.by_id, sessions.command, alert)
            self.control.restore(self.registry.loop_state())
            sessions.control = self.control
            self.links = [make_link(lc, sessions.on_envelope, sessions.on_frame_error, self.ble_factory)
                          for lc in cfg.links]
            uplink.on_command(self._backbone_command)
            for s in sessions.by_id.values():
                out.availability(s, s.online)
            api = ApiServer(cfg.api_socket, self, cfg.api_group)
            await api.start()
            tasks = [asyncio.create_task(lk.run(), name="link-" + lk.name) for lk in self.links]
            tasks.append(asyncio.create_task(self.control.run(), name="control"))
            tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
            self.ready.set()
            log.info("park-gateway up: %d links, %d devices, api %s", len(self.links), len(sessions.by_id),
                     cfg.api_socket)
            try:
                await self._stop.wait()
            finally:
                for lk in self.links:
                    lk.stop()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await api.stop()
                f = self._persist()
                if f is not None:
                    f.result()
                self.writer.close()
                self.registry.close()

    def _persist(self):
        win, seen = self.sessions.dirty_state()
        snap = self.control.snapshot()
        f = None
        if snap != self._saved_state:
            self._saved_state = snap
            f = self.writer.store_loop_state(snap)
        if win:
            f = self.writer.store_windows(win, seen)
        return f  # the writer runs jobs in order: the last one done means all are

    async def _housekeeping(self) -> None:
        last_sweep = 0.0
        while True:
            await asyncio.sleep(PERSIST_S)
            try:
                f = self._persist()
                if f is not None:
                    await asyncio.wrap_future(f)
                now = time.time()
                if now - last_sweep >= SWEEP_S:
                    last_sweep = now
                    self.sessions.sweep(now)
            except Exception:  # noqa: BLE001 - disk trouble must not stop the lights; logged loudly
                log.exception("housekeeping failed")

    # -- status and commands (API and backbone share these)

    def status(self) -> dict:
        s = self.sessions
        devs = list(s.by_id.values())
        online = sum(1 for d in devs if d.online)
        up = self.uplink.stats()
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "links": [lk.info() for lk in self.links],
            "devices": {"total": len(devs), "online": online, "offline": len(devs) - online},
            "backbone": up.as_dict() if hasattr(up, "as_dict") else dict(up),
            "counters": dict(s.counters),
            "control": self.control.status(),
            "clock": timesync.status(self.cfg.trust_clock),
        }

    def devices(self) -> list[dict]:
        return [s.info() for s in self.sessions.by_id.values()]

    def device(self, device_id: str) -> dict:
        s = self.sessions.by_id.get(device_id)
        if s is None:
            raise LookupError("no device %r" % device_id)
        return s.info()

    async def command(self, device_id: str, cmd: dict, deadline: float | None = None, queue_for: float = 0.0) -> dict:
        """One operator/backbone command: {"type": ..., fields...} with defaults filled in.

        `deadline` (event-loop time) and `queue_for` (s) come from the API; the API
        enforces both by cancelling this coroutine, which cancels the command.
        """
        s = self.sessions.by_id.get(device_id)
        if s is None:
            raise LookupError("no device %r" % device_id)
        t = cmd.get("type")
        if t == "unlock":
            comp = cmd.get("comp")
            reason = cmd.get("reason")
            if not isinstance(reason, str) or not reason:
                raise SchemaError("unlock.reason is missing (it goes into the locker's audit log)", "reason")
            fut = self.control.lockers.unlock(device_id, comp, reason)
        else:
            msg = build_command(cmd)
            fut = self.sessions.command(device_id, msg)
        return await fut

    def reload(self) -> dict:
        self.sessions.reload()
        return {"devices": len(self.sessions.by_id)}

    async def _backbone_command(self, site, device_id, command, correlation):
        from gateway.uplink import CommandError

        try:
            if device_id is None:
                if command.get("type") == "status":
                    return self.status()
                if command.get("type") == "pickups":
                    return self.control.waste.pickups(site)
                raise CommandError("unknown_command", "gateway commands: status, pickups")
            s = self.sessions.by_id.get(device_id)
            if s is None or s.site != site:
                raise CommandError("unknown_device", "no device %r at site %r" % (device_id, site))
            return await self.command(device_id, command)
        except CommandFailed as e:
            raise CommandError(e.code, str(e)) from None
        except (ValueError, LookupError) as e:
            raise CommandError("bad_request", str(e)) from None


_DEFAULTS = {
    "light_set": {"hold": 0},
    "light_profile": {"base": 10, "full": 100, "hold": 60, "fade_up": 300, "fade_down": 3000, "max": 100, "curfew": []},
    "prelight": {"hold": 60, "hops": 1},
    "reboot": {"delay": 0},
    "time": {},
    "config": {},
}


def build_command(cmd: dict) -> dict:
    """Fill defaults and validate against the protocol schema (SchemaError names the field)."""
    t = cmd.get("type")
    if t not in _DEFAULTS:
        raise ValueError("unknown command %r (one of: %s, unlock)" % (t, ", ".join(_DEFAULTS)))
    msg = dict(_DEFAULTS[t])
    msg.update(cmd)
    if t == "time" and "time" not in msg:
        msg["time"] = int(time.time())
    messages.encode(msg)
    return msg


async def serve(cfg: config_mod.Config) -> None:
    d = Daemon(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, d.stop)
    async with sdnotify.Supervisor(d):
        await d.run()
