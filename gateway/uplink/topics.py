"""The backbone topic scheme (docs/uplink.md shows every topic with a payload).

All topics start with ``<prefix>`` (default ``park``)::

    <prefix>/<site>/device/<id>/telemetry        SenML JSON pack        QoS 1
    <prefix>/<site>/device/<id>/event/<kind>     event JSON             QoS 1
    <prefix>/<site>/device/<id>/availability     {"state": ...}         QoS 1, retained
    <prefix>/<site>/device/<id>/cmd/req          backbone -> gateway    (subscribed)
    <prefix>/<site>/device/<id>/cmd/res          gateway -> backbone    QoS 1
    <prefix>/<site>/gateway/cmd/req              site-level commands    (subscribed)
    <prefix>/<site>/gateway/cmd/res
    <prefix>/gateway/<gw>/status                 {"state": ...}         QoS 1, retained, last will
    <prefix>/gateway/<gw>/event/<kind>           gateway events (outbox_drop)
"""

from __future__ import annotations

import re

from .errors import TopicError

__all__ = ["Topics", "check_segment", "TopicError"]

# One topic level: no wildcards, no separators, no "$" system prefix, no
# spaces; the same character set as protocol device ids and SenML names.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is a safe single topic level, else raise TopicError."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise TopicError(
            f"{what} {value!r} cannot be a topic level: use 1-64 characters of "
            "A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return value


class Topics:
    """Builds and parses the topics of one gateway; caches per-device strings."""

    def __init__(self, prefix: str, gateway_id: str) -> None:
        self.prefix = prefix
        self.gateway_id = check_segment(gateway_id, "gateway_id")
        self.status = f"{prefix}/gateway/{gateway_id}/status"
        self._cache: dict[tuple[str, str, str], str] = {}
        self._depth = prefix.count("/") + 1

    def _device(self, site: str, device_id: str, leaf: str) -> str:
        key = (site, device_id, leaf)
        topic = self._cache.get(key)
        if topic is None:
            check_segment(site, "site")
            if isinstance(device_id, bytes):
                device_id = device_id.decode("ascii", "replace")
            check_segment(device_id, "device id")
            topic = f"{self.prefix}/{site}/device/{device_id}/{leaf}"
            if len(self._cache) < 100_000:
                self._cache[key] = topic
        return topic

    def telemetry(self, site: str, device_id: str) -> str:
        return self._device(site, device_id, "telemetry")

    def event(self, site: str, device_id: str, kind: str) -> str:
        check_segment(kind, "event kind")
        return self._device(site, device_id, "event/" + kind)

    def availability(self, site: str, device_id: str) -> str:
        return self._device(site, device_id, "availability")

    def gateway_event(self, kind: str) -> str:
        check_segment(kind, "event kind")
        return f"{self.prefix}/gateway/{self.gateway_id}/event/{kind}"

    def command_subscriptions(self, site: str) -> list[str]:
        check_segment(site, "site")
        return [f"{self.prefix}/{site}/device/+/cmd/req", f"{self.prefix}/{site}/gateway/cmd/req"]

    def response_for(self, request_topic: str) -> str:
        return request_topic[: -len("req")] + "res"

    def parse_request(self, topic: str) -> tuple[str, str | None] | None:
        """``(site, device_id or None)`` for a command request topic, else None."""
        parts = topic.split("/")[self._depth :]
        if len(parts) == 5 and parts[1] == "device" and parts[3:] == ["cmd", "req"]:
            return parts[0], parts[2]
        if len(parts) == 4 and parts[1:] == ["gateway", "cmd", "req"]:
            return parts[0], None
        return None
