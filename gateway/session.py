"""Per-device protocol sessions: authentication, replay, hello/welcome/resync, acks and retries.

The rules are protocol/SPEC.md's "session" section, gateway side:
  - frames that fail framing, authentication or replay are counted and dropped,
    never answered (no oracle); an authentic frame with a bad payload is nacked;
  - a fresh hello gets `welcome`; an authentic but stale hello (the device lost
    its counter) gets `resync` with a floor above everything seen;
  - an uplink event is acked only after it is durable in the outbox (the ack is
    sent from the outbox commit's completion), de-duplicated by (kid, eid);
  - downlink commands go through a bounded queue per device, are retransmitted
    with a new sequence number and backoff, and resolve on ack/nack.

Data flows one way: link -> Sessions.on_envelope -> control loops -> uplink.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Callable

from protocol import codec, cose, messages, names
from protocol.cpython import loads as strict_loads
from protocol.errors import ProtocolError, ReplayError, SchemaError, UnknownTypeError
from protocol.replay import ReplayWindow

from gateway.config import Config
from gateway.registry import Device, Registry
from gateway import timesync

log = logging.getLogger("park.session")

UP = cose.UP
DOWN = cose.DOWN
_loads = strict_loads  # cbor2 core, deterministic encoding enforced
_ACKED = frozenset(messages.ACKED_UP) - {"hello"}
_TELEMETRY = frozenset(("fill", "light", "locker", "heartbeat"))
EID_MEMORY = 256
RESYNC_GAP_S = 1.0  # at most one resync per device per second
DOWN_K = 256  # downlink ceiling step (SQLite has no flash wear)


class DownCounter:
    """The gateway's downlink counter, with SeqCounter's guarantee (protocol/replay.py, SPEC 4.1).

    The stored ceiling C means "numbers below C may have been used"; after a
    restart counting resumes at C, so no number is sent twice. Unlike
    SeqCounter, the next ceiling is written by the registry's writer thread while
    half a step of numbers is still left, so the event loop does not wait for
    an fsync; only if that write is still running when the numbers run out does
    take() wait for it.
    """

    __slots__ = ("next", "ceiling", "_writer", "_id", "_k", "_pending", "_pending_to")

    def __init__(self, device_id: str, stored: int | None, writer, k: int = DOWN_K):
        self._id = device_id
        self._writer = writer
        self._k = k
        self.next = stored or 0
        self.ceiling = self.next
        self._pending = None
        self._pending_to = 0
        self._raise(wait=True)

    def _raise(self, wait: bool) -> None:
        if self._pending is None:
            self._pending_to = max(self.ceiling, self.next) + self._k
            self._pending = self._writer.store_ceiling(self._id, self._pending_to)
        if wait or self._pending.done():
            self._pending.result()  # raises if the disk refused: then nothing is sent
            self.ceiling = self._pending_to
            self._pending = None

    def take(self) -> int:
        n = self.next
        if n >= self.ceiling:
            self._raise(wait=True)
        elif self.ceiling - n <= self._k // 2:
            self._raise(wait=False)
        self.next = n + 1
        return n

    def jump(self, floor: int) -> None:
        if floor > self.next:
            self.next = floor


class CommandFailed(Exception):
    """A downlink command was refused (nack) or never answered; `code` names why."""

    def __init__(self, code: str, detail: str = "", field: str = ""):
        super().__init__("%s%s" % (code, ": " + detail if detail else ""))
        self.code = code
        self.detail = detail
        self.field = field


class QueueFull(CommandFailed):
    def __init__(self, device_id: str, n: int):
        super().__init__("busy", "device %s has %d commands queued" % (device_id, n))


class Command:
    __slots__ = ("msg", "future", "tries", "seq", "timer")

    def __init__(self, msg: dict, future: asyncio.Future):
        self.msg = msg
        self.future = future
        self.tries = 0
        self.seq = -1
        self.timer = None


class DeviceSession:
    """One registered device: its key, windows, link, liveness and command queue."""

    __slots__ = ("dev", "kid", "mac", "window", "counter", "link", "online", "last_seen", "hb",
                 "offline_after", "eids", "eid_order", "queue", "inflight", "fw", "status", "welcomed",
                 "last_time_sync", "dirty", "state", "boots", "last_resync")

    def __init__(self, dev: Device, registry: Registry, writer, hb: int, offline_after: float):
        self.dev = dev
        self.kid = dev.id.encode("ascii")
        self.mac = cose.Mac(dev.key)
        ceiling, top, bits = registry.counters(dev.id)
        self.window = ReplayWindow(top, bits)
        self.counter = DownCounter(dev.id, ceiling, writer)
        self.link = None
        self.last_seen = dev.last_seen or 0.0
        self.online = bool(dev.last_seen) and time.time() - dev.last_seen <= offline_after
        self.hb = hb
        self.offline_after = offline_after
        self.eids: dict[int, asyncio.Future] = {}
        self.eid_order: collections.deque = collections.deque()
        self.queue: collections.deque = collections.deque()
        self.inflight: dict[int, Command] = {}
        self.fw = dev.fw
        self.status = 0
        self.boots = None
        self.welcomed = True  # False between a resync and the fresh hello that follows it
        self.last_time_sync = 0.0
        self.last_resync = 0.0
        self.dirty = False
        self.state: dict = {}  # last telemetry per message type, for status and control loops

    @property
    def id(self) -> str:
        return self.dev.id

    @property
    def role(self) -> str:
        return self.dev.role

    @property
    def site(self) -> str:
        return self.dev.site

    def remember(self, eid: int, fut: asyncio.Future) -> None:
        """Keep the outbox future of the last EID_MEMORY events, to de-duplicate retransmissions."""
        if eid not in self.eids:
            self.eid_order.append(eid)
            if len(self.eid_order) > EID_MEMORY:
                self.eids.pop(self.eid_order.popleft(), None)
        self.eids[eid] = fut

    def info(self) -> dict:
        d = self.dev.public()
        d.update(online=self.online, last_seen=self.last_seen or None, fw=self.fw,
                 link=getattr(self.link, "name", None), heartbeat=self.hb,
                 offline_after=self.offline_after, queued=len(self.queue), inflight=len(self.inflight),
                 state=_jsonable(self.state))
        return d


def _retrieved(f: asyncio.Future) -> None:
    """For commands nobody awaits: a failure is counted already; do not warn at garbage collection."""
    if not f.cancelled():
        f.exception()


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


class _SyncWriter:
    """Registry writes in the caller's thread (tools and tests without a daemon)."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def store_ceiling(self, device_id: str, ceiling: int):
        import concurrent.futures

        f = concurrent.futures.Future()
        self.registry.store_ceiling(device_id, ceiling)
        f.set_result(None)
        return f


class Counters(collections.Counter):
    """Dropped-frame and session counters by name; shown by `park-gateway status`."""


class Sessions:
    """All device sessions and the gateway's side of the protocol.

    `out` is the uplink adapter (event/telemetry/availability, see daemon.Out);
    `control` receives every authentic message after the session rules ran.
    """

    def __init__(self, cfg: Config, registry: Registry, out, control=None,
                 clock: Callable[[], float] = time.time, writer=None):
        self.cfg = cfg
        self.registry = registry
        self.writer = writer or _SyncWriter(registry)
        self.out = out
        self.control = control
        self.clock = clock
        self.by_kid: dict[bytes, DeviceSession] = {}
        self.by_id: dict[str, DeviceSession] = {}
        self.counters = Counters()
        self.listeners: list[Callable[[dict], None]] = []
        self.reload()

    # -- registry

    def reload(self) -> None:
        """(Re)read the registry; keeps live state of devices that stay."""
        seen = set()
        for dev in self.registry.all():
            seen.add(dev.id)
            old = self.by_id.get(dev.id)
            if old is not None and old.dev.key == dev.key and old.dev.role == dev.role:
                old.dev = dev  # site or position may have changed; the protocol state stays
                continue
            rc = self.cfg.role(dev.role)
            s = DeviceSession(dev, self.registry, self.writer, rc.heartbeat,
                              rc.heartbeat * rc.offline_factor + rc.offline_grace)
            self.by_id[dev.id] = s
            self.by_kid[s.kid] = s
        for gone in set(self.by_id) - seen:
            s = self.by_id.pop(gone)
            self.by_kid.pop(s.kid, None)
            self._fail_all(s, CommandFailed("removed", "device %s was removed" % gone))

    def _mac_for(self, kid):
        s = self.by_kid.get(kid)
        return s.mac if s is not None else None

    def _window_for(self, kid):
        return self.by_kid[kid].window

    # -- receive path

    def on_envelope(self, link, envelope: bytes) -> None:
        """One deframed envelope from `link`; never raises for bad input."""
        try:
            r = codec.open_envelope(envelope, UP, self._mac_for, self._window_for, _loads)
        except ProtocolError as e:
            self._refused(link, envelope, e)
            return
        s = self.by_kid[r.kid]
        msg = r.msg
        now = self.clock()
        s.link = link
        s.last_seen = now
        s.dirty = True
        if not s.online:
            self._set_online(s, True)
        t = msg["type"]
        if t in _ACKED:
            self._event(s, r.seq, msg, now)
        elif t in _TELEMETRY:
            self._telemetry(s, msg, now)
        elif t == "hello":
            self._hello(s, r.seq, msg, now)
        elif t == "ack" or t == "nack":
            self._answer(s, msg)
        else:  # a message type the device may not send up (schema direction already checked)
            self.counters["unexpected_type"] += 1
        if s.queue and len(s.inflight) < 4 and s.welcomed:
            self._pump(s)

    def on_frame_error(self, link, err: ProtocolError) -> None:
        self.counters["drop_" + err.code] += 1
        link.counters["drop_" + err.code] += 1

    def _refused(self, link, envelope: bytes, e: ProtocolError) -> None:
        code = e.code
        kid = getattr(e, "kid", None)
        seq = getattr(e, "seq", None)
        if kid is not None and isinstance(e, ReplayError):
            if self._stale_hello(link, kid, envelope):
                return
        elif kid is not None and seq is not None:
            s = self.by_kid.get(kid)
            if s is not None:  # authentic, but the payload is bad: nack so the device stops retrying
                self.counters["nacked_" + code] += 1
                link.counters["nacked_" + code] += 1
                s.link = link
                s.last_seen = self.clock()
                s.dirty = True
                self._send(s, {"type": "nack", "ref": seq,
                               "code": messages.E_UNKNOWN_TYPE if isinstance(e, UnknownTypeError) else messages.E_MALFORMED,
                               "field": (getattr(e, "field", "") or "")[:12]})
                return
        self.counters["drop_" + code] += 1
        link.counters["drop_" + code] += 1
        log.debug("dropped frame on %s: %s", link.name, e)

    def _stale_hello(self, link, kid: bytes, envelope: bytes) -> bool:
        """An authentic hello below the window: the device lost its counter -> resync."""
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
        s.link = link
        s.welcomed = False
        floor = s.window.top + 1
        self._send(s, {"type": "resync", "echo": msg["nonce"], "floor": floor})
        self._emit({"kind": "resync", "device": s.id, "floor": floor})
        return True

    def _hello(self, s: DeviceSession, seq: int, msg: dict, now: float) -> None:
        if messages.ROLES.get(msg["role"]) != s.role:
            self.counters["role_mismatch"] += 1
            self._send(s, {"type": "nack", "ref": seq, "code": messages.E_DENIED, "field": "role"})
            return
        s.fw = msg["fw"]
        self._send(s, {"type": "welcome", "echo": msg["nonce"], "time": timesync.time_for_device(now, self.cfg.trust_clock),
                       "hb": s.hb})
        self._send(s, {"type": "ack", "ref": seq})
        s.welcomed = True
        s.last_time_sync = now
        self.counters["hello"] += 1
        # commands sent before the reboot were lost with the device's replay state: send again
        for c in list(s.inflight.values()):
            self._transmit(s, c)
        self._emit({"kind": "hello", "device": s.id, "fw": s.fw})
        if self.control is not None:
            self.control.on_hello(s)

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
            if self.control is not None:
                self.control.on_message(s, msg, now)
            self._emit({"kind": "event", "device": s.id, "site": s.site, "msg": msg})
        fut.add_done_callback(lambda f, s=s, ack=ack: self._ack_durable(f, s, ack))

    def _ack_durable(self, f: asyncio.Future, s: DeviceSession, ack: dict) -> None:
        if f.cancelled() or f.exception() is not None:
            self.counters["event_not_stored"] += 1  # no ack: the device retransmits, and it is stored then
            log.error("event from %s not stored, not acked: %s", s.id, f.exception() if not f.cancelled() else "cancelled")
            return
        self._send(s, ack)

    def _telemetry(self, s: DeviceSession, msg: dict, now: float) -> None:
        t = msg["type"]
        s.state[t] = msg
        if t == "heartbeat":
            s.fw = msg["fw"]
            s.status = msg["status"]
            if s.boots is not None and msg["boots"] != s.boots:
                self._emit({"kind": "reboot", "device": s.id, "boots": msg["boots"]})
            s.boots = msg["boots"]
            if (not msg["status"] & messages.ST_TIME_VALID or now - s.last_time_sync > self.cfg.session.time_sync) \
                    and timesync.synchronised(self.cfg.trust_clock):
                s.last_time_sync = now
                self._queue(s, {"type": "time", "time": int(now)}).add_done_callback(_retrieved)
        self.out.telemetry(s, msg, now)
        if self.control is not None:
            self.control.on_message(s, msg, now)
        if self.listeners:
            self._emit({"kind": "telemetry", "device": s.id, "site": s.site, "msg": msg})

    # -- liveness

    def _set_online(self, s: DeviceSession, online: bool) -> None:
        s.online = online
        self.out.availability(s, online)
        self._emit({"kind": "online" if online else "offline", "device": s.id})
        if self.control is not None:
            self.control.on_online(s, online)

    def sweep(self, now: float | None = None) -> list[str]:
        """Mark devices offline that stayed silent past their expected interval; returns their ids."""
        now = self.clock() if now is None else now
        gone = []
        for s in self.by_id.values():
            if s.online and now - s.last_seen > s.offline_after:
                self._set_online(s, False)
                gone.append(s.id)
        return gone

    def dirty_state(self) -> tuple[list, list]:
        """Replay windows and last-seen rows changed since the last call."""
        win, seen = [], []
        for s in self.by_id.values():
            if s.dirty:
                s.dirty = False
                win.append((s.id, s.window.top, s.window.bits))
                seen.append((s.last_seen, s.fw, s.id))
        return win, seen

    # -- downlink

    def command(self, device_id: str, msg: dict) -> asyncio.Future:
        """Queue a downlink command; the future gives the device's ack or raises CommandFailed."""
        s = self.by_id.get(device_id)
        if s is None:
            f = asyncio.get_running_loop().create_future()
            f.set_exception(CommandFailed("unknown_device", "no device %r" % device_id))
            return f
        messages.encode(msg)  # SchemaError here, naming the field, before anything is queued
        return self._queue(s, msg)

    def _queue(self, s: DeviceSession, msg: dict) -> asyncio.Future:
        f = asyncio.get_running_loop().create_future()
        if len(s.queue) >= self.cfg.session.queue:
            self.counters["queue_full"] += 1
            f.set_exception(QueueFull(s.id, len(s.queue)))
            return f
        s.queue.append(Command(msg, f))
        if s.welcomed and s.link is not None and len(s.inflight) < 4:
            self._pump(s)
        return f

    def _pump(self, s: DeviceSession) -> None:
        while s.queue and len(s.inflight) < 4:
            c = s.queue.popleft()
            if c.future.done():
                continue
            self._transmit(s, c)

    def _transmit(self, s: DeviceSession, c: Command) -> None:
        if c.seq >= 0:
            s.inflight.pop(c.seq, None)
        c.tries += 1
        c.seq = self._send(s, c.msg)
        s.inflight[c.seq] = c
        sc = self.cfg.session
        delay = min(sc.retry_base * (2 ** (c.tries - 1)), sc.retry_max)
        if c.timer is not None:
            c.timer.cancel()
        c.timer = asyncio.get_running_loop().call_later(delay, self._retry, s, c)

    def _retry(self, s: DeviceSession, c: Command) -> None:
        c.timer = None
        if c.future.done():
            s.inflight.pop(c.seq, None)
            return
        if c.tries >= self.cfg.session.retries:
            s.inflight.pop(c.seq, None)
            self.counters["command_timeout"] += 1
            c.future.set_exception(CommandFailed("timeout", "%s to %s: no answer after %d tries"
                                                 % (c.msg["type"], s.id, c.tries)))
            self._pump(s)
            return
        self.counters["retransmit"] += 1
        self._transmit(s, c)

    def _answer(self, s: DeviceSession, msg: dict) -> None:
        c = s.inflight.pop(msg["ref"], None)
        if c is None:
            self.counters["stray_answer"] += 1
            return
        if c.timer is not None:
            c.timer.cancel()
        if not c.future.done():
            if msg["type"] == "ack":
                c.future.set_result({"device": s.id, "command": c.msg["type"], "result": "ok", "tries": c.tries})
            else:
                code = names.NACK_CODES.get(msg["code"], str(msg["code"]))
                c.future.set_exception(CommandFailed(code, "%s refused by %s" % (c.msg["type"], s.id), msg["field"]))

    def _fail_all(self, s: DeviceSession, err: Exception) -> None:
        for c in list(s.inflight.values()) + list(s.queue):
            if c.timer is not None:
                c.timer.cancel()
            if not c.future.done():
                c.future.set_exception(err)
        s.inflight.clear()
        s.queue.clear()

    def _send(self, s: DeviceSession, msg: dict) -> int:
        seq = s.counter.take()
        if s.link is not None:
            s.link.write(codec.pack(s.mac, DOWN, s.kid, seq, msg))
        return seq

    # -- observers (the API's `tail`)

    def _emit(self, ev: dict) -> None:
        for fn in self.listeners:
            fn(ev)
