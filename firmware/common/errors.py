"""Typed firmware errors: each says what was wrong and where (a field name)."""


class FirmwareError(Exception):
    pass


class ConfigError(FirmwareError):
    """A config value is missing, of the wrong kind or out of range; `field` names it
    (dotted for nested sections at boot, e.g. "pins.echo"; the bare key in a config command)."""

    def __init__(self, field, reason):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


class ProvisionError(FirmwareError):
    """The board is not provisioned (no /config.json, no /key.bin, bad id): it cannot talk."""


class RoleMissing(ProvisionError):
    """/config.json names a role whose package is not on the board (deployed for another role)."""


class CommandError(FirmwareError):
    """Raised by App.on_command to refuse a command: the runtime answers nack {code, field}.

    code is one of protocol.codes.E_*; field names the offending field ("" if none).
    """

    def __init__(self, code, field="", detail=""):
        super().__init__(detail or " ".join(("nack", str(code), field)))
        self.code = code
        self.field = field
