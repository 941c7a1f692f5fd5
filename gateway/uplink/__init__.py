"""Uplink to the city backbone: durable outbox + MQTT (QoS 1) + SenML.

Data flows one way, and every message takes the same path::

    control loops --> Uplink.event/telemetry/availability
                  --> Outbox (SQLite WAL, group commit)   <- durable here
                  --> MqttLink (aiomqtt, <= `inflight` QoS 1 in flight)
                  --> broker PUBACK --> row deleted

Usage (the daemon, engineer G1)::

    from gateway.uplink import Uplink, UplinkConfig

    cfg = UplinkConfig.from_mapping(toml["uplink"])       # UplinkConfigError names the key
    async with Uplink(cfg, state_dir / "outbox.sqlite") as uplink:
        uplink.on_command(handle)                        # before or after entering
        await uplink.availability("stadtpark", "l001", True)
        await uplink.event("stadtpark", "c001", "alarm", {"alarm": "fire"}, "c001-1234", time.time())
        # hot path: enqueue many, await once, then ack the devices
        futs = [uplink.event_nowait(...), ...]
        await futs[-1]          # group commits finish in order: all are durable now
        uplink.stats()          # UplinkStats(connected=..., outbox_depth=..., dropped=...)

Entering the context opens (and recovers) the outbox and starts connecting
in the background; it never waits for the broker, so a gateway with the
backbone down still starts and stores everything.

``event``/``telemetry``/``availability`` return once the message is committed
to the outbox; that is the point after which the daemon may ack a device.
They raise ``OutboxError`` if the commit failed (then do not ack), and
``TopicError``/``SenmlError``/``PayloadError`` for input that can never be
published (nothing is stored then either).
"""

from .config import OutboxConfig, TlsConfig, UplinkConfig
from .errors import (
    CommandError,
    OutboxError,
    PayloadError,
    SenmlError,
    TopicError,
    UplinkConfigError,
    UplinkError,
)
from .service import CommandHandler, Uplink, UplinkStats

__all__ = [
    "Uplink",
    "UplinkStats",
    "UplinkConfig",
    "TlsConfig",
    "OutboxConfig",
    "CommandHandler",
    "UplinkError",
    "UplinkConfigError",
    "OutboxError",
    "PayloadError",
    "SenmlError",
    "TopicError",
    "CommandError",
]
