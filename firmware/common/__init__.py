"""Shared firmware runtime for park-edge devices (MicroPython on ESP32).

Installed on the board as /lib/common. Role packages (container_sensor,
light_pole, locker) provide `app.App`; common.runtime boots, links and
supervises it. See docs/firmware.md for the App contract.
"""

VERSION = 10000
"""Runtime version, M*10000 + m*100 + p (sent in hello/heartbeat when the App has no FW)."""


class Device:
    """The provisioned device as common.config.DeviceConfig checked it: a plain holder, so
    the config module itself can leave the heap after boot."""

    def __init__(self, raw, kid, site, role, link, rt, pins, app):
        self.raw = raw
        self.id = kid
        self.kid = kid.encode()
        self.site = site
        self.role = role
        self.link = link
        self.rt = rt
        self.pins = pins
        self.app = app


SETUP_ONLY = ("common.config", "protocol.rules", "protocol.codes")
"""What building and configuring an App loads and its service never needs: forgotten after the
boot (common.start.main), a config change (Runtime._config) and an App's restart (common.ota_inst)."""


def forget(*names):
    """Drop modules from sys.modules and their package, so that once nothing else refers to
    them the collector gets their code back (boot-only and rare paths; docs/firmware.md#footprint)."""
    import sys
    for n in names:
        sys.modules.pop(n, None)
        i = n.rfind(".")
        pkg = sys.modules.get(n[:i])
        if pkg is not None and n[i + 1:] in pkg.__dict__:
            delattr(pkg, n[i + 1:])
