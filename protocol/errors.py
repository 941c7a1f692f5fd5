"""Typed protocol errors.

Every malformed, forged or replayed input ends in one of these, never in a bare
exception. `code` is the stable name used in test vectors and counters.
"""


class ProtocolError(Exception):
    code = "protocol"

    def __init__(self, detail=""):
        super().__init__(detail)
        self.detail = detail

    def __str__(self):
        return self.code + (": " + self.detail if self.detail else "")


class FrameError(ProtocolError):
    code = "frame"


class CobsError(FrameError):
    code = "cobs"


class CrcError(FrameError):
    code = "crc"


class OversizeError(FrameError):
    code = "oversize"


class CborError(ProtocolError):
    code = "cbor"


class EnvelopeError(ProtocolError):
    code = "envelope"


class UnknownKeyError(ProtocolError):
    code = "unknown_kid"


class TagError(ProtocolError):
    code = "bad_tag"


class ReplayError(ProtocolError):
    code = "replay"


class SchemaError(ProtocolError):
    """A field is missing, has the wrong type or is out of range; `field` names it."""

    code = "schema"

    def __init__(self, detail="", field=""):
        super().__init__(detail)
        self.field = field


class UnknownTypeError(SchemaError):
    code = "unknown_type"


class TokenError(ProtocolError):
    """A locker access token was refused; `reason` is one of token.REASONS."""

    code = "token"

    def __init__(self, reason, detail=""):
        super().__init__(detail or reason)
        self.reason = reason
