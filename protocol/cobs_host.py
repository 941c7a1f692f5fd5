"""The host's half of protocol.cobs: the `cobs` C extension's encode and decode where it is
installed, with its errors as CobsError; never on a device."""

from protocol.errors import CobsError

try:
    from cobs import cobs as _c
except ImportError:
    __all__ = ()
else:
    __all__ = ("encode", "decode")
    encode = _c.encode

    def decode(data):
        try:
            return _c.decode(data)
        except _c.DecodeError as e:
            raise CobsError(str(e))
