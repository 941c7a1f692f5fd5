"""Typed errors of the uplink; each says what was wrong and where."""

from __future__ import annotations

__all__ = ["UplinkError", "UplinkConfigError", "SenmlError", "TopicError", "PayloadError", "OutboxError", "CommandError"]


class UplinkError(Exception):
    """Base class of every error raised by gateway.uplink."""


class UplinkConfigError(UplinkError, ValueError):
    """A bad uplink setting; ``key`` is the dotted TOML key (``uplink.tls.ca_file``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class SenmlError(UplinkError, ValueError):
    """A SenML record that RFC 8428 rejects; ``index`` and ``field`` locate it."""

    def __init__(self, index: int | None, field: str | None, message: str) -> None:
        where = "pack" if index is None else f"record {index}"
        if field:
            where += f" field {field!r}"
        super().__init__(f"SenML {where}: {message}")
        self.index = index
        self.field = field
        self.message = message


class TopicError(UplinkError, ValueError):
    """A site, device id or event kind that cannot be one MQTT topic level."""


class PayloadError(UplinkError, ValueError):
    """An event body or timestamp that cannot become a JSON message."""


class OutboxError(UplinkError):
    """The durable outbox could not commit (disk full, I/O error, closed).

    The message is NOT stored: the caller must not acknowledge it to a device.
    """


class CommandError(UplinkError):
    """Raised by a command handler to answer a backbone request with an error.

    ``code`` is a short machine-readable word (``unknown_device``, ``busy``...),
    published in the response next to ``message``; ``field`` names the request
    field a ``bad_value`` is about.
    """

    def __init__(self, code: str, message: str = "", field: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.field = field
