"""The Uplink: the one object the daemon talks to (see gateway/uplink/__init__.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

from .config import UplinkConfig
from protocol.errors import SchemaError

from .errors import CommandError, OutboxError, PayloadError, TopicError
from .mqtt import MqttLink
from .process import ProcessLink
from .outbox import PRIO_EVENT, PRIO_STATE, PRIO_TELEMETRY, Outbox
from .requests import RequestLog
from .senml import Record, encode_pack, records_from_message
from .topics import Topics, check_segment

__all__ = ["Uplink", "UplinkStats", "CommandHandler"]

log = logging.getLogger("park.uplink")

CommandHandler = Callable[[str, "str | None", dict[str, Any], str], Awaitable["Mapping[str, Any] | None"]]
"""``handler(site, device_id or None, command, correlation_id) -> result``.

``command`` is the request object without its ``id`` (it has at least
``type``).  The returned mapping is published as ``result`` in the response;
raise ``CommandError(code, message)`` to answer with an error.  A handler
that takes longer than ``command_timeout_s`` is answered with ``timeout``.
"""

_DROP_EVENT_EVERY_S = 10.0


@dataclass(frozen=True)
class UplinkStats:
    """A snapshot for ``park-gateway status`` and the daemon's API."""

    connected: bool
    broker: str
    outbox_depth: int
    outbox_bytes: int
    oldest_age_s: float | None
    published: int
    inflight: int
    reconnects: int
    last_error: str | None
    dropped: dict[str, int] = field(default_factory=dict)  # "age_telemetry", "size_event", ...
    process: dict[str, Any] | None = None  # the MQTT client's process: {"pid", "restarts"}; None in one process

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected, "broker": self.broker, "outbox_depth": self.outbox_depth,
            "outbox_bytes": self.outbox_bytes, "oldest_age_s": self.oldest_age_s,
            "published": self.published, "inflight": self.inflight, "reconnects": self.reconnects,
            "last_error": self.last_error, "dropped": dict(self.dropped), "dropped_total": self.dropped_total,
            "process": self.process,
        }


_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # one encoder, not one per message


def _dumps(obj: Any) -> bytes:
    return _ENCODE(obj).encode()


def _check_ts(ts: Any, what: str) -> float:
    if type(ts) is float and 0 <= ts < math.inf:  # the hot path: time.time()
        return ts
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        raise PayloadError(f"{what}: ts must be seconds since the Unix epoch, got {ts!r}")
    return ts


class Uplink:
    """Durable, ordered, at-least-once uplink to the backbone (async context manager)."""

    def __init__(
        self,
        config: UplinkConfig,
        outbox_path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        commit_window_s: float = 0.0,
    ) -> None:
        self.config = config
        self._clock = clock
        self.topics = Topics(config.topic_prefix, config.gateway_id)
        self._sites = frozenset(config.sites)
        self.outbox = Outbox(outbox_path, config.outbox, clock=clock, on_drop=self._on_drop,
                             commit_window_s=commit_window_s)
        self._requests = RequestLog(os.path.join(os.path.dirname(os.path.abspath(outbox_path)), "requests.sqlite"))
        link = ProcessLink if config.use_process else MqttLink
        self._link = link(config, self.topics, self.outbox, self._requests, clock=clock)
        self._link.command_dispatch = self._dispatch_command
        self._handler: CommandHandler | None = None
        self._drop_counts: dict[str, int] = {}
        self._drop_timer: asyncio.TimerHandle | None = None
        self._open = False

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> "Uplink":
        await self.outbox.open()
        try:
            self._requests.open()
        except OutboxError:
            await self.outbox.close()
            raise
        self._open = True
        self._link.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        if self._drop_timer is not None:
            self._drop_timer.cancel()
        await self._link.stop()
        self._requests.close()
        await self.outbox.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the broker accepted the connection (tests, demo start-up)."""
        await asyncio.wait_for(self._link.connected_event.wait(), timeout)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the outbox is empty (everything acknowledged by the broker)."""
        await asyncio.wait_for(self.outbox.wait_empty(), timeout)

    # -- publishing ----------------------------------------------------------

    def _site(self, site: str) -> str:
        if site not in self._sites:
            check_segment(site, "site")
            raise TopicError(f"site {site!r} is not served by this gateway (uplink.sites = {sorted(self._sites)})")
        return site

    def event_nowait(
        self, site: str, device_id: str, kind: str, body: Mapping[str, Any], event_id: str, ts: float
    ) -> "asyncio.Future[None]":
        """Queue an event for the next group commit; the future resolves when it is durable.

        Futures resolve in call order, so awaiting the last one of a batch
        covers all earlier ones.
        """
        topic = self.topics.event(self._site(site), device_id, kind)
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
            raise PayloadError(f"event {site}/{device_id}/{kind}: event_id must be a string of 1-128 characters, "
                               f"got {event_id!r}")
        _check_ts(ts, f"event {site}/{device_id}/{kind}")
        try:
            payload = _dumps({"id": event_id, "ts": ts, "site": site, "device": device_id, "kind": kind,
                              "data": dict(body)})
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"event {site}/{device_id}/{kind}: body is not JSON-serialisable ({exc})") from None
        return self.outbox.append(topic, payload, prio=PRIO_EVENT)

    async def event(
        self, site: str, device_id: str, kind: str, body: Mapping[str, Any], event_id: str, ts: float
    ) -> None:
        """Store an event durably (returns once committed; then the device may be acked)."""
        await self.event_nowait(site, device_id, kind, body, event_id, ts)

    def telemetry_nowait(
        self,
        site: str,
        device_id: str,
        role: str,
        records: Sequence[Record] | Mapping[str, Any],
        ts: float | None = None,
    ) -> "asyncio.Future[None]":
        """Queue a SenML pack; ``records`` is a list of SenML records or a decoded
        protocol telemetry message (``{"type": "fill", ...}``), translated per ``role``."""
        topic = self.topics.telemetry(self._site(site), device_id)
        built_here = isinstance(records, Mapping)
        if built_here:
            records = records_from_message(role, records)
        payload = encode_pack(site, device_id, records, self._clock() if ts is None else ts, validate=not built_here)
        return self.outbox.append(topic, payload, prio=PRIO_TELEMETRY)

    async def telemetry(
        self,
        site: str,
        device_id: str,
        role: str,
        records: Sequence[Record] | Mapping[str, Any],
        ts: float | None = None,
    ) -> None:
        await self.telemetry_nowait(site, device_id, role, records, ts)

    def availability_nowait(self, site: str, device_id: str, online: bool,
                            ts: float | None = None) -> "asyncio.Future[None]":
        """Retained ``{"state": "online"|"offline", "ts"}`` on the device's availability topic.

        No task per call: a start-up with 10,000 devices queues them all into one commit.
        """
        topic = self.topics.availability(self._site(site), device_id)
        when = self._clock() if ts is None else _check_ts(ts, f"availability {site}/{device_id}")
        payload = _dumps({"state": "online" if online else "offline", "ts": when})
        return self.outbox.append(topic, payload, retain=True, prio=PRIO_STATE)

    async def availability(self, site: str, device_id: str, online: bool, ts: float | None = None) -> None:
        """`availability_nowait`, returning once it is committed."""
        await self.availability_nowait(site, device_id, online, ts)

    def site_state_nowait(self, site: str, leaf: str, body: Mapping[str, Any]) -> asyncio.Future[None]:
        """Retained ``body`` on ``<prefix>/<site>/gateway/<leaf>`` (the device inventory), through the outbox."""
        topic = f"{self.topics.prefix}/{self._site(site)}/gateway/{check_segment(leaf, 'topic level')}"
        return self.outbox.append(topic, _dumps(dict(body)), retain=True, prio=PRIO_STATE)

    def retained_nowait(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Retained ``payload`` on a topic outside the park's scheme (Home Assistant discovery, gateway/uplink/hass.py);
        an empty payload clears the topic."""
        return self.outbox.append(topic, payload, retain=True, prio=PRIO_STATE)

    # -- commands ------------------------------------------------------------

    def on_command(self, handler: CommandHandler) -> None:
        """Register the one handler for backbone command requests (replaces any earlier one)."""
        self._handler = handler

    async def _dispatch_command(
        self, site: str, device_id: str | None, command: dict[str, Any], correlation: str
    ) -> Mapping[str, Any] | None:
        if site not in self._sites:
            raise CommandError("unknown_site", f"site {site!r} is not served by this gateway")
        if self._handler is None:
            raise CommandError("not_ready", "the gateway has no command handler yet")
        try:
            return await self._handler(site, device_id, command, correlation)
        except SchemaError as exc:
            raise CommandError("bad_value", exc.detail, exc.field) from None

    # -- visibility of drops ------------------------------------------------

    def _on_drop(self, reason: str, telemetry: int, events: int) -> None:
        log.warning(
            "outbox over its %s cap: dropped %d telemetry and %d event messages (oldest first)",
            reason, telemetry, events,
        )
        for k, n in ((f"{reason}_telemetry", telemetry), (f"{reason}_event", events)):
            if n:
                self._drop_counts[k] = self._drop_counts.get(k, 0) + n
        if self._drop_timer is None and self._open:
            loop = asyncio.get_running_loop()
            self._drop_timer = loop.call_later(_DROP_EVENT_EVERY_S, self._publish_drop_event)
            self._publish_drop_event(rearm=False)

    def _publish_drop_event(self, rearm: bool = True) -> None:
        """Tell the backbone (through the outbox, coalesced) that data was dropped."""
        if rearm:
            self._drop_timer = None
        if not self._drop_counts or not self._open:
            return
        counts, self._drop_counts = self._drop_counts, {}
        now = self._clock()
        body = {"dropped": counts, "totals": self.outbox.dropped_totals()}
        payload = _dumps({"id": f"{self.config.gateway_id}-drop-{now:.6f}", "ts": now,
                          "gateway": self.config.gateway_id, "kind": "outbox_drop", "data": body})
        fut = self.outbox.append(self.topics.gateway_event("outbox_drop"), payload, prio=PRIO_EVENT)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    # -- status --------------------------------------------------------------

    def backlog(self) -> int:
        """Messages taken in and not finished: not yet durable, or durable and waiting in memory for a
        connected broker (the ingress backpressure's level, gateway/links/pressure.py). A broker that
        is away adds nothing: that backlog is the outbox's job, on disk."""
        ob = self.outbox
        return ob.uncommitted + (ob.in_memory if self._link.connected else 0)

    def unsent(self) -> int:
        """Durable messages a connected broker has not acknowledged yet (0 while it is away): the
        backlog the publisher is behind by, on disk included (the shedding stage watches it)."""
        return self.outbox.depth if self._link.connected else 0

    def stats(self) -> UplinkStats:
        ob = self.outbox
        return UplinkStats(
            connected=self._link.connected,
            broker=f"{'mqtts' if self.config.tls.enabled else 'mqtt'}://{self.config.host}:{self.config.port}",
            outbox_depth=ob.depth,
            outbox_bytes=ob.bytes,
            oldest_age_s=ob.oldest_age(),
            published=self._link.published,
            inflight=self._link.inflight,
            reconnects=self._link.reconnects,
            last_error=self._link.last_error,
            dropped=ob.dropped_totals(),
            process=({"pid": self._link.pid, "restarts": self._link.restarts}
                     if isinstance(self._link, ProcessLink) else None),
        )
