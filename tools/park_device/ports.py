"""Serial ports and which of them look like an ESP32 (by the USB bridge's vendor/product id)."""
from __future__ import annotations

import os
import stat
from typing import Iterable

from serial.tools import list_ports

from .errors import AmbiguousPort, NoPort

# (vid, pid or None for "any product of this vendor") -> bridge name
ESP32_BRIDGES = {
    (0x303A, None): "Espressif USB (native USB / USB-Serial-JTAG)",
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
}


def bridge_of(vid: int | None, pid: int | None) -> str | None:
    """The ESP32 USB bridge name for a vid/pid, or None if it does not look like an ESP32."""
    if vid is None:
        return None
    return ESP32_BRIDGES.get((vid, pid)) or ESP32_BRIDGES.get((vid, None))


def describe(p) -> dict:
    """A ListPortInfo as a plain dict (what `ports --json` prints)."""
    bridge = bridge_of(p.vid, p.pid)
    return {
        "device": p.device,
        "vid": f"{p.vid:04x}" if p.vid is not None else None,
        "pid": f"{p.pid:04x}" if p.pid is not None else None,
        "serial_number": p.serial_number,
        "location": p.location,
        "description": p.description if p.description and p.description != "n/a" else None,
        "manufacturer": p.manufacturer,
        "esp32": bridge is not None,
        "bridge": bridge,
    }


def scan(infos: Iterable | None = None, include_all: bool = True) -> list[dict]:
    """All serial ports (ESP32-looking first), or only the ESP32-looking ones."""
    infos = list_ports.comports() if infos is None else infos
    rows = [describe(p) for p in infos]
    if not include_all:
        rows = [r for r in rows if r["esp32"]]
    rows.sort(key=lambda r: (not r["esp32"], r["device"]))
    return rows


def is_url(port: str) -> bool:
    return "://" in port


def resolve(port: str | None, infos: Iterable | None = None, serial_number: str | None = None) -> str:
    """Pick the port to use: the one given, the one with this USB serial number, or the only ESP32.

    Raises NoPort (nothing there) or AmbiguousPort (several candidates, say which).
    """
    if port:
        if is_url(port):
            return port
        try:
            st = os.stat(port)
        except FileNotFoundError:
            raise NoPort(f"serial port {port} does not exist", where=port,
                         hint="is the USB cable plugged in? `park-device ports` lists what is there") from None
        except PermissionError:
            raise NoPort(f"no permission to look at {port}", where=port,
                         hint="add yourself to the 'dialout' group and log in again") from None
        if not stat.S_ISCHR(st.st_mode):
            raise NoPort(f"{port} is not a serial device", where=port)
        return port
    rows = scan(infos, include_all=False)
    if serial_number:
        rows = [r for r in rows if r["serial_number"] == serial_number]
        if not rows:
            raise NoPort(f"no ESP32 port with USB serial number {serial_number}",
                         hint="`park-device ports` lists serial numbers")
    if not rows:
        raise NoPort("no ESP32-looking serial port found",
                     hint="plug the board in, check the cable carries data, or give --port")
    if len(rows) > 1:
        names = ", ".join(f"{r['device']} ({r['serial_number'] or 'no serial'})" for r in rows)
        raise AmbiguousPort(f"several ESP32 ports: {names}", hint="choose one with --port or --serial")
    return rows[0]["device"]
