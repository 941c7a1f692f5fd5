"""Shared firmware runtime for park-edge devices (MicroPython on ESP32).

Installed on the board as /lib/common. Role packages (container_sensor,
light_pole, locker) provide `app.App`; common.runtime boots, links and
supervises it. See docs/firmware.md for the App contract.
"""

VERSION = 10000
"""Runtime version, M*10000 + m*100 + p (sent in hello/heartbeat when the App has no FW)."""
