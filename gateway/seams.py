"""The typed seams of the gateway: link -> session -> control loops -> uplink.

Each part sees the next one only through one of these small interfaces, so a
part can be tested or benchmarked with a stand-in and the daemon wires the real
ones in straight-line order (gateway/daemon.py). Nothing here runs; the
Protocols exist for readers and type checkers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping, Protocol

from protocol.errors import ProtocolError


class FrameSink(Protocol):
    """What a link hands its deframed input to (the sessions)."""

    devices: "Devices"  # read only: a BLE pool connects known devices, and those with commands waiting

    def on_envelope(self, link: "LinkPort", envelope: bytes) -> bytes | None:
        """One complete envelope; never raises for bad input. Returns the sender's kid if it was
        authentic and fresh (a TCP server binds the connection to that device), else None."""

    def on_frame_error(self, link: "LinkPort", err: ProtocolError) -> None:
        """A frame that failed framing or CRC."""


class LinkPort(Protocol):
    """What the sessions need of a link: a name for status, counters and a way out."""

    name: str
    counters: Any  # collections.Counter of drop reasons

    def write(self, frame: bytes) -> None: ...

    # optional `reachable: bool` - False while the device has no connection (a sleeping BLE bin, a closed
    # TCP connection): commands then wait in the downlink queue (queue_for) instead of being sent


class DeviceView(Protocol):
    """A device as the control loops and observers see it (read only)."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def site(self) -> str: ...

    online: bool
    caps: int | None  # the hello's capability bits (protocol.codes CAP_*), None before the first hello
    state: dict  # last telemetry per message type


Devices = Mapping[str, DeviceView]
"""A read-only view of every registered device by id (Sessions.devices)."""


class Stage(Protocol):
    """The stage after the sessions (the control loops): authentic, fresh messages in order."""

    def on_message(self, s: DeviceView, msg: dict, now: float) -> None: ...

    def on_hello(self, s: DeviceView) -> None: ...

    def on_online(self, s: DeviceView, online: bool) -> None: ...


SendCommand = Callable[[str, dict], "asyncio.Future[dict]"]
"""cmd(device_id, msg) -> future of the device's answer (Sessions.command)."""

RaiseAlert = Callable[[DeviceView, str, dict, str, float], Any]
"""alert(device, kind, body, event_id, ts): a derived event for the backbone (Out.alert)."""


class UplinkStats(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


class UplinkPort(Protocol):
    """What the gateway needs of the backbone uplink (gateway.uplink.Uplink)."""

    def event_nowait(self, site: str, device_id: str, kind: str, body: Mapping[str, Any], event_id: str,
                     ts: float) -> "asyncio.Future[None]": ...

    def telemetry_nowait(self, site: str, device_id: str, role: str, records: Mapping[str, Any],
                         ts: float | None = None) -> "asyncio.Future[None]": ...

    def availability_nowait(self, site: str, device_id: str, online: bool,
                            ts: float | None = None) -> "asyncio.Future[None]": ...

    async def availability(self, site: str, device_id: str, online: bool, ts: float | None = None) -> None: ...

    def on_command(self, handler: Callable) -> None: ...

    def stats(self) -> UplinkStats: ...

    # optional `backlog() -> int` (messages taken in, not finished, held in memory) and `unsent() -> int`
    # (durable, not yet taken by a connected broker): the daemon's ingress backpressure
    # (gateway/links/pressure.py) watches them; an uplink without them is never pushed back on


class Pressure(Protocol):
    """The ingress backpressure as the uplink adapter sees it (gateway.links.pressure.Backpressure)."""

    shedding: bool  # telemetry for the backbone is coalesced to the newest per device and type

    def on_relief(self, fn: Callable[[], None]) -> None: ...


class Out(Protocol):
    """The sessions' and loops' view of the uplink (daemon.Out): queue now, learn durability later."""

    def event(self, s: DeviceView, msg: dict, now: float) -> "asyncio.Future[None]": ...

    def alert(self, s: DeviceView, kind: str, body: dict, eid: str, now: float) -> "asyncio.Future[None]": ...

    def telemetry(self, s: DeviceView, msg: dict, now: float) -> None: ...

    def availability(self, s: DeviceView, online: bool) -> None: ...


Listener = Callable[[dict], None]
"""An observer of gateway events (tail, demo): {"kind": ..., "device": ..., ...}."""


class EventSource(Protocol):
    def subscribe(self, fn: Listener) -> Callable[[], None]:
        """Call fn for every event from now on; returns the call that ends it."""
