"""The device table: one DeviceSession per registered device, kept in step with the registry.

A session holds what the protocol needs per device (key, replay window,
downlink counter, link) and what status shows (liveness, last telemetry,
pending commands). The table is the only place sessions are made or dropped;
everyone else sees it through `view` (a read-only mapping by id).
"""

from __future__ import annotations

import asyncio
import collections
import time
import types

from protocol import codec, cose
from protocol.replay import ReplayWindow

from gateway.downcounter import DownCounter
from gateway.downlink import Downlink
from gateway.registry import Device, Registry
from gateway.seams import LinkPort

EID_MEMORY = 256


class DeviceSession:
    """One registered device: its key, windows, link, liveness and command queue."""

    __slots__ = ("dev", "kid", "_mac", "window", "counter", "link", "online", "last_seen", "hb",
                 "offline_after", "eids", "eid_order", "queue", "inflight", "fw", "status", "welcomed",
                 "last_time_sync", "dirty", "state", "boots", "last_resync", "caps")

    def __init__(self, dev: Device, registry: Registry, writer, hb: int, offline_after: float,
                 counters: tuple[int | None, int, int] | None = None, start_counter: bool = True):
        self.dev = dev
        self.kid = dev.id.encode("ascii")
        self._mac: cose.Mac | None = None
        ceiling, top, bits = counters or registry.counters(dev.id)
        self.window = ReplayWindow(top, bits)
        self.counter = DownCounter(dev.id, ceiling, writer, start=start_counter)
        self.link: LinkPort | None = None
        self.last_seen = dev.last_seen or 0.0
        self.online = bool(dev.last_seen) and time.time() - self.last_seen <= offline_after
        self.hb = hb
        self.offline_after = offline_after
        self.eids: dict[int, asyncio.Future] = {}
        self.eid_order: collections.deque = collections.deque()
        self.queue: collections.deque = collections.deque()
        self.inflight: dict = {}
        self.fw = dev.fw
        self.caps: int | None = None  # what the hello says is wired (protocol.codes CAP_*); None until one
        self.status = 0
        self.boots = None
        self.welcomed = True  # False between a resync the device took and its fresh hello
        self.last_time_sync = 0.0
        self.last_resync = 0.0
        self.dirty = False
        self.state: dict = {}  # last telemetry per message type, for status and control loops

    @property
    def mac(self) -> cose.Mac:
        """Made at the device's first frame: 10,000 key schedules at start-up cost ~0.2 s."""
        m = self._mac
        if m is None:
            m = self._mac = cose.Mac(self.dev.key)
        return m

    @property
    def id(self) -> str:
        return self.dev.id

    @property
    def role(self) -> str:
        return self.dev.role

    @property
    def site(self) -> str:
        return self.dev.site

    def send(self, msg: dict, link=None) -> int:
        """One downlink frame with the next sequence number, on `link` or the device's own link."""
        seq = self.counter.take()
        link = link or self.link
        if link is not None:
            link.write(codec.pack(self.mac, cose.DOWN, self.kid, seq, msg))
        return seq

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
                 commands=Downlink.pending(self), state=_jsonable(self.state))
        return d


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


class DeviceTable:
    """Sessions by id and by kid, (re)built from the registry."""

    def __init__(self, cfg, registry: Registry, writer):
        self.cfg = cfg
        self.registry = registry
        self.writer = writer
        self.by_id: dict[str, DeviceSession] = {}
        self.by_kid: dict[bytes, DeviceSession] = {}
        self.view = types.MappingProxyType(self.by_id)
        self.load()

    def load(self, devices=None) -> list[DeviceSession]:
        """Read every device (or just `devices`, ids changed in the registry); returns the sessions dropped.

        A device whose key and role stay keeps its live protocol state.
        """
        stored: dict = {}
        if devices is None:
            rows, gone = self.registry.all(), set(self.by_id)
            stored = self.registry.all_counters()
        else:
            rows, gone = [], set()
            for did in devices:
                dev = self.registry.find(did)
                if dev is None:
                    gone.add(did)
                else:
                    rows.append(dev)
        dropped = []
        fresh = []
        for dev in rows:
            gone.discard(dev.id)
            old = self.by_id.get(dev.id)
            if old is not None and old.dev.key == dev.key and old.dev.role == dev.role:
                old.dev = dev  # site or position may have changed; the protocol state stays
                continue
            if old is not None:
                self.by_kid.pop(old.kid, None)
                dropped.append(old)
            rc = self.cfg.role(dev.role)
            s = DeviceSession(dev, self.registry, self.writer, rc.heartbeat,
                              rc.heartbeat * rc.offline_factor + rc.offline_grace,
                              stored.get(dev.id, (None, -1, 0)) if devices is None else None, start_counter=False)
            fresh.append(s.counter)
            self.by_id[dev.id] = s
            self.by_kid[s.kid] = s
        DownCounter.start_all(fresh, self.writer)
        for did in gone:
            gone_s = self.by_id.pop(did, None)
            if gone_s is not None:
                self.by_kid.pop(gone_s.kid, None)
                dropped.append(gone_s)
        return dropped

    def mac_for(self, kid):
        s = self.by_kid.get(kid)
        return s.mac if s is not None else None

    def window_for(self, kid):
        return self.by_kid[kid].window

    def dirty_state(self) -> tuple[list, list]:
        """Replay windows and last-seen rows changed since the last call."""
        win, seen = [], []
        for s in self.by_id.values():
            if s.dirty:
                s.dirty = False
                win.append((s.id, s.window.top, s.window.bits))
                seen.append((s.last_seen, s.fw, s.id))
        return win, seen
