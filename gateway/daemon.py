"""The daemon: link -> session -> control loops -> uplink, one asyncio loop.

(With `[uplink] process` the uplink's MQTT client runs in a supervised child process,
gateway/uplink/process.py; the outbox, and so every ack's durability, stays here.)

Wiring, in the direction data flows and without back-references (Parts):
uplink -> Out (seams.Out) -> device table -> downlink -> control loops
(seams.Stage; they get the table's read-only view, downlink.command and
Out.alert) -> Sessions (the receive rules) -> links (seams.FrameSink).
Observers (tail) subscribe to one EventBus.

Ordering that matters (the issue's "lose no event"): a device event goes into
the outbox's next group commit, and the device's ack is written from that
commit's completion callback; commits complete in order, so no ack ever
leaves before the event it acknowledges is on disk. Replay windows and
last-seen times are written to the registry every `persist_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from typing import Callable

from protocol import messages, names, rules
from protocol.errors import SchemaError

from gateway import config as config_mod
from gateway import __version__, eventlog, preflight, sdnotify, timesync, tokens
from gateway.api import ApiServer
from gateway.control import Control
from gateway.devices import DeviceTable
from gateway.downlink import CommandFailed, Downlink, asking
from gateway.events import EventBus
from gateway.inventory import Inventory
from gateway.links import make_link
from gateway.registry import Registry, RegistryWriter
from gateway.links.pressure import Backpressure
from gateway.seams import Pressure, UplinkPort
from gateway.session import Counters, Sessions
from gateway.statelock import StateLock
from gateway.update import UpdateError, UpdateService
from gateway.update.config import defaults as read_update_defaults
from gateway.update.port import DownlinkPort
from gateway.web import server as web

log = logging.getLogger("park.daemon")

PERSIST_S = 0.5
SWEEP_S = 1.0
MAX_QUEUE_FOR = 7 * 86400


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
    """The sessions' and loops' view of the uplink (seams.Out): queue now, learn durability from the future.

    Alerts are also published to the observers; a message the uplink refuses or
    cannot build is counted in `faults` and logged once per kind.
    """

    def __init__(self, uplink: UplinkPort, events: EventBus, pressure: Pressure | None = None):
        self.uplink = uplink
        self.events = events
        self.faults = events.faults
        self.errors = 0
        self.shed = 0  # telemetry messages replaced by a newer one of their device while shedding
        self._tel_fut = None  # the outbox hands one future to a whole group commit
        self._avail_fut = None
        self._pressure = pressure
        self._held: dict = {}  # (device id, type) -> (device, msg, now): the newest, while shedding
        if pressure is not None:
            pressure.on_relief(self._release)

    def _failed(self, e: Exception, s, what: str) -> asyncio.Future:
        self.errors += 1
        self.faults.record("uplink", e, s.id, what)
        f = asyncio.get_running_loop().create_future()
        f.set_exception(e)
        return f

    def event(self, s, msg: dict, now: float) -> asyncio.Future:
        try:
            return self.uplink.event_nowait(s.site, s.id, msg["type"], describe(msg), event_id(s.id, msg["eid"]), now)
        except Exception as e:  # noqa: BLE001 - typed uplink errors; never ack what is not stored
            return self._failed(e, s, msg["type"])

    def alert(self, s, kind: str, body: dict, eid: str, now: float) -> asyncio.Future:
        self.events.publish({"kind": "alert", "device": s.id, "site": s.site, "alert": kind, "body": body, "id": eid})
        try:
            f = self.uplink.event_nowait(s.site, s.id, kind, body, eid, now)
        except Exception as e:  # noqa: BLE001
            f = self._failed(e, s, kind)
        f.add_done_callback(_consume)
        return f

    def telemetry(self, s, msg: dict, now: float) -> None:
        p = self._pressure
        if p is not None and p.shedding:  # overload: the backbone gets the newest per device and type
            key = (s.id, msg["type"])
            if key in self._held:
                self.shed += 1
            self._held[key] = (s, msg, now)
            return
        self._send_telemetry(s, msg, now)

    def _release(self) -> None:
        held, self._held = self._held, {}
        for s, msg, now in held.values():
            self._send_telemetry(s, msg, now)

    def _send_telemetry(self, s, msg: dict, now: float) -> None:
        try:
            f = self.uplink.telemetry_nowait(s.site, s.id, s.role, msg, now)
        except Exception as e:  # noqa: BLE001 - a SenML builder error must not reach the link
            self._failed(e, s, msg["type"]).add_done_callback(_consume)
            return
        if f is not self._tel_fut:  # one log line per failed commit, not one callback per message
            self._tel_fut = f
            f.add_done_callback(_consume)

    def availability(self, s, online: bool) -> None:
        try:
            f = self.uplink.availability_nowait(s.site, s.id, online)
        except Exception as e:  # noqa: BLE001 - as from the task it used to be: logged, never raised into a link
            log.warning("uplink: %s", e)
            return
        if f is not self._avail_fut:  # one callback per commit, not one per device
            self._avail_fut = f
            f.add_done_callback(_consume)


def _consume(f: asyncio.Future) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("uplink: %s", f.exception())


class Parts:
    """Everything between the links and the uplink, wired in the direction data flows."""

    def __init__(self, cfg: config_mod.Config, registry: Registry, writer, uplink: UplinkPort,
                 clock=time.time, pressure: Backpressure | None = None):
        self.events = EventBus()
        self.counters = Counters()
        self.pressure = pressure
        self.out = Out(uplink, self.events, pressure)
        self.table = DeviceTable(cfg, registry, writer)
        self.downlink = Downlink(cfg.session, self.table.view, self.counters)
        self.control = Control(cfg, self.table.view, self.downlink.command, self.out.alert, clock,
                               faults=self.events.faults)
        self.updates = UpdateService(cfg.update or read_update_defaults(cfg.state_dir), self.table.view,
                                     DownlinkPort(self.downlink, self.table.view), uplink, self.events.publish, clock)
        self.sessions = Sessions(cfg, registry, self.out, Stages(self.updates, self.control), clock, table=self.table,
                                 downlink=self.downlink, events=self.events, counters=self.counters)


def _pressure(cfg: config_mod.SessionConfig, backlog, unsent=None) -> Backpressure | None:
    """[session] backpressure: bulk links stop at that backlog (poles' and lockers' read on within an allowance)
    and read again below a quarter of it; telemetry is coalesced from half of it (shed_telemetry). None
    without a backlog to watch or with 0."""
    high = cfg.backpressure
    if backlog is None or not high:
        return None
    return Backpressure(backlog, high=high, shed_at=high // 2 if cfg.shed_telemetry else high, low=high // 4,
                        unsent=unsent)


def _role_of(by_kid):
    """The backpressure's view of the registry: an authenticated kid's role decides its link's class."""
    def role_of(kid: bytes) -> str | None:
        s = by_kid.get(kid)
        return s.role if s is not None else None
    return role_of


class Stages:
    """Two stages in a row (seams.Stage): the update service sees update reports, the control loops the rest."""

    def __init__(self, first, then):
        self.first, self.then = first, then

    def on_message(self, s, msg: dict, now: float) -> None:
        if msg["type"] == "update":
            self.first.on_message(s, msg, now)
        else:
            self.then.on_message(s, msg, now)

    def on_hello(self, s) -> None:
        self.first.on_hello(s)
        self.then.on_hello(s)

    def on_online(self, s, online: bool) -> None:
        self.first.on_online(s, online)
        self.then.on_online(s, online)


class Daemon:
    """Owns every part for one run; `status()`, `command()` and friends serve the API and the backbone."""

    def __init__(self, cfg: config_mod.Config, ble_factory=None, uplink_factory=None):
        self.cfg = cfg
        self.ble_factory = ble_factory
        self.uplink_factory = uplink_factory
        self.started = time.time()
        self.registry: Registry | None = None
        self.uplink = None
        self.sessions: Sessions | None = None
        self.control: Control | None = None
        self.events: EventBus | None = None
        self.links = []
        self.pressure: Backpressure | None = None
        self.out: Out | None = None
        self.dashboard = None  # gateway.web.server.Dashboard once it listens (its .url)
        self._saved_state = None
        self._data_version = None
        self._change_seq = 0
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until stop(); raises AlreadyRunning (one line to print) if another daemon has the state dir."""
        try:
            preflight.check(self.cfg)  # the same checks as `config check`: a failure names file and key
            os.makedirs(self.cfg.state_dir, mode=0o700, exist_ok=True)
            lock = StateLock(self.cfg.state_dir)
            lock.acquire()
            try:
                await self._run()
            finally:
                lock.release()
        finally:
            self.done.set()

    async def _run(self) -> None:
        from gateway.uplink import Uplink, hass

        cfg = self.cfg
        self.registry = Registry(cfg.registry_path)
        self.writer = RegistryWriter(cfg.registry_path)
        self._data_version = self.registry.data_version()
        self._change_seq = self.registry.changes_since(0)[0]
        factory = self.uplink_factory or Uplink
        async with factory(cfg.uplink, cfg.outbox_path, commit_window_s=cfg.session.commit_ms / 1000) as uplink:
            self.uplink = uplink
            self.pressure = _pressure(cfg.session, getattr(uplink, "backlog", None), getattr(uplink, "unsent", None))
            parts = Parts(cfg, self.registry, self.writer, uplink, pressure=self.pressure)
            if self.pressure is not None:
                self.pressure.role_of = _role_of(parts.table.by_kid)  # poles' and lockers' links read through
            self.out = parts.out
            self.events, self.control, self.sessions = parts.events, parts.control, parts.sessions
            self.updates = parts.updates
            eventlog.attach(self.events)
            self.inventory = Inventory(uplink, self.sessions.devices, cfg.uplink.gateway_id, __version__,
                                       cfg.uplink.sites, hass.discovery(cfg, uplink, self.sessions.devices,
                                                                        __version__))
            self.events.subscribe(self.inventory.on_event)
            self.inventory.publish()
            self.control.restore(self.registry.loop_state())
            self.links = [make_link(lc, self.sessions, self.ble_factory, self.pressure) for lc in cfg.links]
            if self.pressure is not None:
                self.pressure.start()
            uplink.on_command(self._backbone_command)
            for s in self.sessions.devices.values():
                parts.out.availability(s, s.online)
            api = ApiServer(cfg.api_socket, self, cfg.api_group)
            await api.start()
            self.dashboard = await web.start(self, cfg.web, api.outcomes)
            tasks = [asyncio.create_task(lk.run(), name="link-" + lk.name) for lk in self.links]
            tasks.append(asyncio.create_task(self.control.run(), name="control"))
            tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
            tasks.append(asyncio.create_task(self.updates.run(), name="updates"))
            # Start-up's objects (modules, functions, types, the device table) leave the cyclic
            # collector's view: under load a full collection over them took 10-60 ms, which a
            # pre-light waited out (docs/benchmarks.md, overload). Garbage first, so none is frozen.
            gc.collect()
            gc.freeze()
            self.ready.set()
            log.info("park-gateway up: %d links, %d devices, api %s", len(self.links), len(self.sessions.devices),
                     cfg.api_socket)
            try:
                await self._stop.wait()
            finally:
                gc.unfreeze()  # a daemon inside a longer-lived process (the tests) leaves nothing frozen
                self.inventory.flush()
                if self.pressure is not None:
                    self.pressure.stop()
                for lk in self.links:
                    lk.stop()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if self.dashboard is not None:
                    await self.dashboard.stop()
                await api.stop()
                self.updates.close()
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

    def _registry_changes(self) -> None:
        """Devices added, changed or removed by any tool since the last look take effect now."""
        v = self.registry.data_version()
        if v == self._data_version:
            return
        self._data_version = v
        self._change_seq, ids = self.registry.changes_since(self._change_seq)
        if ids is None or ids:
            log.info("registry changed: reloading %s", "every device" if ids is None else ", ".join(ids))
            self.sessions.reload(ids)
            self.inventory.publish()

    async def _housekeeping(self) -> None:
        last_sweep = 0.0
        while True:
            await asyncio.sleep(PERSIST_S)
            try:
                self._registry_changes()
                f = self._persist()
                if f is not None:
                    await asyncio.wrap_future(f)
                now = time.time()
                if now - last_sweep >= SWEEP_S:
                    last_sweep = now
                    self.sessions.sweep(now)
            except Exception:  # noqa: BLE001 - disk trouble must not stop the lights; logged loudly
                log.exception("housekeeping failed")

    # -- status, observers and commands (API and backbone share these)

    def status(self) -> dict:
        s = self.sessions
        devs = list(s.devices.values())
        online = sum(1 for d in devs if d.online)
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "links": [lk.info() for lk in self.links],
            "devices": {"total": len(devs), "online": online, "offline": len(devs) - online},
            "backbone": self.uplink.stats().as_dict(),
            "counters": dict(s.counters),
            "backpressure": dict(self.pressure.info(), telemetry_shed=self.out.shed) if self.pressure else None,
            "faults": s.faults.as_dict(),
            "control": self.control.status(),
            "clock": timesync.status(self.cfg.trust_clock),
        }

    def subscribe(self, fn) -> Callable[[], None]:
        """Observe gateway events (tail): fn(dict) for each; returns the call that ends it."""
        return self.events.subscribe(fn)

    def pickups(self, site: str | None = None) -> dict:
        return self.control.waste.pickups(site)

    def devices(self) -> list[dict]:
        return [s.info() for s in self.sessions.devices.values()]

    def device(self, device_id: str) -> dict:
        """One device's info, with its pending commands under "commands" (id, type, state, deadline...)."""
        s = self.sessions.devices.get(device_id)
        if s is None:
            raise LookupError("no device %r" % device_id)
        return s.info()

    async def command(self, device_id: str, cmd: dict, *, deadline: float | None = None,
                      queue_for: float | None = None) -> dict:
        """One operator or backbone command: {"type": ..., fields...}, defaults filled in.

        deadline: wall-clock time (time.time()) by which the device must have answered.
        queue_for: seconds the command may wait, also for a device that is not reachable
            now. Such a command is listed in device(ID)["commands"], can be cancelled with
            cancel(), and stays queued if the caller goes away. None or 0: a device that is
            not reachable fails the command at once (CommandFailed("offline")), and
            cancelling the awaiting task (the asker went away) cancels the command.
        The command ends at the later of deadline and now + queue_for; with neither, after
        [session] command_timeout. Past that it leaves the queue, is never sent again, and
        CommandFailed("timeout") is raised.
        Returns {"device", "command", "result": "ok", "tries"}; raises LookupError for an
        unknown device, ValueError/SchemaError for a bad command, CommandFailed otherwise.
        """
        s = self.sessions.devices.get(device_id)
        if s is None:
            raise LookupError("no device %r" % device_id)
        if queue_for is not None and (isinstance(queue_for, bool) or not isinstance(queue_for, (int, float))
                                      or not 0 <= queue_for <= MAX_QUEUE_FOR):
            raise ValueError("queue_for must be 0..%d seconds, got %r" % (MAX_QUEUE_FOR, queue_for))
        t = cmd.get("type")
        if t == "unlock":
            comp = cmd.get("comp")
            reason = cmd.get("reason")
            if not isinstance(reason, str) or not reason:
                raise SchemaError("unlock.reason is missing (it goes into the locker's audit log)", "reason")
            with asking(deadline, queue_for):
                fut = self.control.lockers.unlock(device_id, comp, reason)
        else:
            msg = build_command(cmd)
            fut = self.sessions.command(device_id, msg, deadline, queue_for)
        if queue_for:
            return await asyncio.shield(fut)
        return await fut

    def cancel(self, device_id: str, command_id: str) -> dict:
        """Cancel a pending command (listed in device(ID)["commands"]); its asker gets CommandFailed("cancelled")."""
        s = self.sessions.devices.get(device_id)
        if s is None:
            raise LookupError("no device %r" % device_id)
        if not self.sessions.downlink.cancel(s, command_id):
            raise LookupError("device %s has no pending command %r" % (device_id, command_id))
        return {"device": device_id, "command": command_id, "result": "cancelled"}

    async def update(self, req: dict, site: str | None = None) -> dict:
        """A software-update operation (gateway/update): {"action": status|import|plan|halt|resume|abort, ...};
        raises UpdateError with a code. `site`: a backbone request acts only at its own site."""
        return await self.updates.request(req, site)

    def reload(self) -> dict:
        self.sessions.reload()
        return {"devices": len(self.sessions.devices)}

    async def _backbone_command(self, site, device_id, command, correlation):
        from gateway.uplink import CommandError

        try:
            if device_id is None:
                if command.get("type") == "status":
                    return self.status()
                if command.get("type") == "pickups":
                    return self.pickups(site)
                if command.get("type") == "token":
                    return tokens.for_backbone(self.sessions.devices, self.cfg.state_dir, site, command)
                if command.get("type") == "update":
                    return await self.update(command, site)
                raise CommandError("unknown_command", "gateway commands: status, pickups, token, update")
            s = self.sessions.devices.get(device_id)
            if s is None or s.site != site:
                raise CommandError("unknown_device", "no device %r at site %r" % (device_id, site))
            return await self.command(device_id, command, deadline=time.time() + self.cfg.uplink.command_timeout_s)
        except CommandFailed as e:
            raise CommandError(e.code, str(e)) from None
        except UpdateError as e:
            raise CommandError(e.code, e.message) from None
        except (ValueError, LookupError) as e:
            raise CommandError("bad_request", str(e)) from None


_DEFAULTS = {
    "light_set": {"hold": 0},
    "light_profile": {"base": rules.LIGHT_BASE, "full": rules.LIGHT_FULL, "hold": rules.LIGHT_HOLD_S,
                      "fade_up": rules.LIGHT_FADE_UP_MS, "fade_down": rules.LIGHT_FADE_DOWN_MS,
                      "max": rules.LIGHT_MAX, "curfew": []},
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
