"""The gateway's receive rules (protocol/SPEC.md "session" section, gateway side).

  - frames that fail framing, authentication or replay are counted and dropped,
    never answered (no oracle) and change no session state; an authentic frame
    with a bad payload is nacked;
  - a fresh hello gets `welcome`; an authentic but stale hello (the device lost
    its counter, or a replay) gets `resync` on the link it came from, and nothing
    else changes until the device's fresh hello;
  - an uplink event is acked only after it is durable in the outbox (the ack is
    sent from the outbox commit's completion), de-duplicated by (kid, eid);
  - whatever the next stage (control loops), the uplink adapter or an observer
    raises is counted and logged once per kind; it never reaches the link.

Data flows one way: link -> Sessions.on_envelope -> stage (control loops) -> uplink.
The device table (gateway/devices.py), the command queues (gateway/downlink.py)
and the observers (gateway/events.py) are separate parts; Sessions applies the rules.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Callable

from protocol import codes, cose, messages
from protocol.cpython import loads as strict_loads, open_envelope
from protocol.errors import ProtocolError, ReplayError, UnknownTypeError

from gateway.config import Config
from gateway import timesync
from gateway.devices import DeviceSession, DeviceTable
from gateway.downcounter import SyncWriter
from gateway.downlink import CommandFailed, Downlink, QueueFull
from gateway.events import EventBus, Faults
from gateway.registry import Registry
from gateway.seams import LinkPort, Out, Stage

__all__ = ["Sessions", "Counters", "CommandFailed", "QueueFull", "DeviceSession"]

ACK_SLICE = 8  # ~1 ms of acks on a loaded 2-core VM: what a pre-light may wait for
log = logging.getLogger("park.session")

UP = cose.UP
_loads = strict_loads  # cbor2 core, deterministic encoding enforced
_ACKED = frozenset(messages.ACKED_UP) - {"hello"}
_TELEMETRY = frozenset(("fill", "light", "locker", "heartbeat"))
RESYNC_GAP_S = 1.0  # at most one resync per device per second


def _retrieved(f: asyncio.Future) -> None:
    """For commands nobody awaits: a failure is counted already; do not warn at garbage collection."""
    if not f.cancelled():
        f.exception()


class Counters(collections.Counter):
    """Dropped-frame and session counters by name; shown by `park-gateway status`."""


class _NoStage:
    def on_message(self, s, msg, now):
        pass

    def on_hello(self, s):
        pass

    def on_online(self, s, online):
        pass


class Sessions:
    """All device sessions and the gateway's side of the protocol.

    `out` is the uplink adapter (daemon.Out); `stage` (the control loops) gets every
    authentic, fresh message after the session rules ran; `events` the observers.
    """

    def __init__(self, cfg: Config, registry: Registry, out: Out, stage: Stage | None = None,
                 clock: Callable[[], float] = time.time, writer=None, *, table: DeviceTable | None = None,
                 downlink: Downlink | None = None, events: EventBus | None = None,
                 counters: Counters | None = None):
        self.cfg = cfg
        self.registry = registry
        self.out = out
        self.stage = stage or _NoStage()
        self.clock = clock
        self.counters = counters if counters is not None else Counters()
        self.table = table if table is not None else DeviceTable(cfg, registry, writer or SyncWriter(registry))
        self.downlink = downlink if downlink is not None else Downlink(cfg.session, self.table.view, self.counters)
        self.events = events if events is not None else EventBus()
        self.faults: Faults = self.events.faults
        self._listeners = self.events.listeners  # the bus's list: a cheap "anyone listening?" per frame
        self._mac_for = self.table.mac_for
        self._window_for = self.table.window_for
        self.by_id = self.table.by_id
        self.by_kid = self.table.by_kid
        self._waiting: dict[asyncio.Future, list] = {}  # a commit's future -> the (session, ack) it holds back
        self._due: collections.deque = collections.deque()  # acks whose events are durable, not yet sent
        self._sending = False

    @property
    def devices(self):
        """Read-only view of the sessions by device id (what the control loops get)."""
        return self.table.view

    # -- registry

    def reload(self, devices=None) -> None:
        """(Re)read the registry, or only the ids in `devices`; keeps live state of devices that stay."""
        for s in self.table.load(devices):
            if self.by_id.get(s.id) is None:
                self.downlink.fail_all(s, CommandFailed("removed", "device %s was removed" % s.id))
            else:
                self.downlink.fail_all(s, CommandFailed("removed", "device %s was re-provisioned" % s.id))

    def dirty_state(self) -> tuple[list, list]:
        return self.table.dirty_state()

    # -- receive path

    def on_envelope(self, link: LinkPort, envelope: bytes) -> bytes | None:
        """One deframed envelope from `link`; never raises. Returns the kid if it was authentic and fresh."""
        try:
            r = open_envelope(envelope, UP, self._mac_for, self._window_for)  # SPEC 7's checks, fused for the host
        except ProtocolError as e:
            return self._refused(link, envelope, e)
        s = self.by_kid[r.kid]
        msg = r.msg
        t = msg["type"]
        try:
            now = self.clock()
            s.link = link
            s.last_seen = now
            s.dirty = True
            if not s.online:
                self._set_online(s, True)
            if t in _ACKED:
                self._event(s, r.seq, msg, now)
            elif t in _TELEMETRY:
                self._telemetry(s, msg, now)
            elif t == "hello":
                self._hello(s, r.seq, msg, now)
            elif t == "ack" or t == "nack":
                self.downlink.answer(s, msg)
            elif t == "update":
                self._update(s, msg, now)
            else:  # a message type the device may not send up (schema direction already checked)
                self.counters["unexpected_type"] += 1
            if s.queue and len(s.inflight) < 4 and s.welcomed:
                self.downlink.pump(s)
        except Exception as e:  # noqa: BLE001 - a bug here must not drop the link or the rest of the read
            self.faults.record("session", e, s.id, t)
        return r.kid

    def on_frame_error(self, link: LinkPort, err: ProtocolError) -> None:
        self.counters["drop_" + err.code] += 1
        link.counters["drop_" + err.code] += 1

    def _refused(self, link: LinkPort, envelope: bytes, e: ProtocolError) -> bytes | None:
        code = e.code
        kid = getattr(e, "kid", None)
        seq = getattr(e, "seq", None)
        if kid is not None and isinstance(e, ReplayError):
            if self._stale_hello(link, kid, envelope):
                return None
        elif kid is not None and seq is not None:
            s = self.by_kid.get(kid)
            if s is not None:  # authentic and fresh, but the payload is bad: nack so the device stops retrying
                self.counters["nacked_" + code] += 1
                link.counters["nacked_" + code] += 1
                s.link = link
                s.last_seen = self.clock()
                s.dirty = True
                s.send({"type": "nack", "ref": seq,
                        "code": codes.E_UNKNOWN_TYPE if isinstance(e, UnknownTypeError) else codes.E_MALFORMED,
                        "field": (getattr(e, "field", "") or "")[:messages.NACK_FIELD_MAX]})
                return kid
        self.counters["drop_" + code] += 1
        link.counters["drop_" + code] += 1
        log.debug("dropped frame on %s: %s", link.name, e)
        return None

    def _stale_hello(self, link: LinkPort, kid: bytes, envelope: bytes) -> bool:
        """An authentic hello below the window: the device lost its counter, or someone replays it.

        Either way it gets a resync on the link it came from and the session stays as
        it is: a device that really lost its counter takes the resync and says a fresh
        hello, which is what moves its session; a replay moves nothing.
        """
        s = self.by_kid[kid]
        try:
            e = cose.parse(envelope)
            msg = messages.decode(e.payload, UP, _loads)
        except ProtocolError:
            return False
        if msg["type"] != "hello":
            return False
        now = self.clock()
        if now - s.last_resync < RESYNC_GAP_S:
            self.counters["resync_suppressed"] += 1  # replayed hellos must not make us a frame pump
            return True
        s.last_resync = now
        self.counters["resync"] += 1
        floor = s.window.top + 1
        s.send({"type": "resync", "echo": msg["nonce"], "floor": floor}, link)
        self._emit({"kind": "resync", "device": s.id, "floor": floor})
        return True

    def _hello(self, s: DeviceSession, seq: int, msg: dict, now: float) -> None:
        if messages.ROLES.get(msg["role"]) != s.role:
            self.counters["role_mismatch"] += 1
            s.send({"type": "nack", "ref": seq, "code": codes.E_DENIED, "field": "role"})
            return
        s.fw = msg["fw"]
        s.caps = msg["caps"]
        s.send({"type": "welcome", "echo": msg["nonce"], "time": timesync.time_for_device(now, self.cfg.trust_clock),
                 "hb": s.hb})
        s.send({"type": "ack", "ref": seq})
        s.welcomed = True
        s.last_time_sync = now
        self.counters["hello"] += 1
        self.downlink.resend(s)
        self._emit({"kind": "hello", "device": s.id, "fw": s.fw})
        try:
            self.stage.on_hello(s)
        except Exception as e:  # noqa: BLE001
            self.faults.record("control", e, s.id, "hello")

    def _event(self, s: DeviceSession, seq: int, msg: dict, now: float) -> None:
        eid = msg["eid"]
        ack = {"type": "ack", "ref": seq}
        fut = s.eids.get(eid)
        if fut is not None and not (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            # a retransmission: ack once the first copy is durable (it may still be committing)
            self.counters["duplicate_events"] += 1
        else:
            fut = self.out.event(s, msg, now)
            s.remember(eid, fut)
            try:
                self.stage.on_message(s, msg, now)
            except Exception as e:  # noqa: BLE001 - stored and acked all the same
                self.faults.record("control", e, s.id, msg["type"])
            if self._listeners:
                self._emit({"kind": "event", "device": s.id, "site": s.site, "msg": msg})
        self._ack_when_stored(s, ack, fut)

    def _ack_when_stored(self, s: DeviceSession, ack: dict, fut: asyncio.Future) -> None:
        """One callback per commit, however many events it holds (not one per event)."""
        waiting = self._waiting.get(fut)
        if waiting is None:
            waiting = self._waiting[fut] = []
            fut.add_done_callback(self._stored)
        waiting.append((s, ack))

    def _stored(self, f: asyncio.Future) -> None:
        """A commit ended: its events' acks are due, or, if it failed, none is sent."""
        waiting = self._waiting.pop(f, [])
        if f.cancelled() or f.exception() is not None:
            why = f.exception() if not f.cancelled() else "cancelled"
            for s, _ in waiting:
                self.counters["event_not_stored"] += 1  # no ack: the device retransmits, and it is stored then
                log.error("event from %s not stored, not acked: %s", s.id, why)
            return
        self._due.extend(waiting)
        if not self._sending:
            self._sending = True
            self._send_acks()

    def _send_acks(self) -> None:
        """ACK_SLICE acks at a time, the rest after the loop has looked at the links again: one group
        commit under load holds hundreds, and a pre-light must not wait for all of them."""
        due = self._due
        for _ in range(min(ACK_SLICE, len(due))):
            s, ack = due.popleft()
            try:
                s.send(ack)
            except Exception as e:  # noqa: BLE001 - one ack lost (the device retransmits), never the ones after it
                self.faults.record("session", e, s.id, "ack")
        if due:
            asyncio.get_running_loop().call_soon(self._send_acks)
        else:
            self._sending = False

    def _telemetry(self, s: DeviceSession, msg: dict, now: float) -> None:
        t = msg["type"]
        s.state[t] = msg
        if t == "heartbeat":
            s.fw = msg["fw"]
            s.status = msg["status"]
            if s.boots is not None and msg["boots"] != s.boots:
                self._emit({"kind": "reboot", "device": s.id, "boots": msg["boots"]})
            s.boots = msg["boots"]
            if (not msg["status"] & codes.ST_TIME_VALID or now - s.last_time_sync > self.cfg.session.time_sync) \
                    and timesync.synchronised(self.cfg.trust_clock):
                s.last_time_sync = now
                self.downlink.submit(s, {"type": "time", "time": int(now)}).add_done_callback(_retrieved)
        self.out.telemetry(s, msg, now)
        try:
            self.stage.on_message(s, msg, now)
        except Exception as e:  # noqa: BLE001
            self.faults.record("control", e, s.id, t)
        if self._listeners:
            self._emit({"kind": "telemetry", "device": s.id, "site": s.site, "msg": msg})

    def _update(self, s: DeviceSession, msg: dict, now: float) -> None:
        """A device's software-update state (SPEC 10): not acked, for the stage (the update service)."""
        s.state["update"] = msg
        try:
            self.stage.on_message(s, msg, now)
        except Exception as e:  # noqa: BLE001
            self.faults.record("control", e, s.id, "update")
        if self._listeners:
            self._emit({"kind": "telemetry", "device": s.id, "site": s.site, "msg": msg})

    # -- liveness

    def _set_online(self, s: DeviceSession, online: bool) -> None:
        s.online = online
        self.out.availability(s, online)
        self._emit({"kind": "online" if online else "offline", "device": s.id})
        try:
            self.stage.on_online(s, online)
        except Exception as e:  # noqa: BLE001
            self.faults.record("control", e, s.id, "online" if online else "offline")

    def sweep(self, now: float | None = None) -> list[str]:
        """Mark devices offline that stayed silent past their expected interval; returns their ids."""
        now = self.clock() if now is None else now
        gone = []
        for s in self.by_id.values():
            if s.online and now - s.last_seen > s.offline_after:
                self._set_online(s, False)
                gone.append(s.id)
        return gone

    # -- downlink

    def command(self, device_id: str, msg: dict, deadline: float | None = None,
                queue_for: float | None = None) -> asyncio.Future:
        """Queue a downlink command (gateway/downlink.py); the future gives the ack or raises CommandFailed."""
        return self.downlink.command(device_id, msg, deadline, queue_for)

    def _emit(self, ev: dict) -> None:
        self.events.publish(ev)
