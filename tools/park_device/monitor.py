"""monitor: the board's console log, live, without interrupting the firmware.

Only reads (no Ctrl-C, no raw REPL): the firmware keeps running while a technician
watches. --reset resets the board first to see the boot log. Ends on Ctrl-C, after
--duration seconds, or when a line matches --until (for scripts and the bench).
"""
from __future__ import annotations

import re
import time

import serial

from .board import _lock_probe
from .errors import NoAnswer
from .ports import resolve


def monitor(ui, port: str | None, *, duration: float | None = None, until: str | None = None,
            reset: bool = False, baud: int = 115200, serial_number: str | None = None,
            idle_timeout: float | None = None) -> tuple[str, dict]:
    port = resolve(port, serial_number=serial_number)
    _lock_probe(port)
    pattern = re.compile(until) if until else None
    lines, matched, buf = 0, None, b""
    start = last_rx = time.monotonic()
    s = serial.serial_for_url(port, baudrate=baud, timeout=0.2, exclusive=True)
    try:
        if reset:
            # stop the firmware, friendly REPL, then a real reset: the boot log from the first line
            s.write(b"\r\x03\x03\x02")
            time.sleep(0.2)
            s.reset_input_buffer()
            s.write(b"import machine; machine.reset()\r")
        try:
            while duration is None or time.monotonic() - start < duration:
                chunk = s.read(256)
                now = time.monotonic()
                if chunk:
                    last_rx = now
                    buf += chunk
                    while b"\n" in buf:
                        raw, buf = buf.split(b"\n", 1)
                        text = raw.decode(errors="replace").rstrip("\r")
                        lines += 1
                        if ui.json:
                            ui.event({"t": round(time.time(), 3), "line": text})
                        else:
                            ui.out.write(text + "\n")
                            ui.out.flush()
                        if pattern and pattern.search(text):
                            matched = text
                            break
                    if matched is not None:
                        break
                elif idle_timeout and now - last_rx > idle_timeout:
                    raise NoAnswer(f"no output from {port} for {idle_timeout:g} s", where=port,
                                   hint="is the board powered and running?")
        except KeyboardInterrupt:
            pass
    finally:
        s.close()
    took = time.monotonic() - start
    summary = f"monitor: {lines} lines from {port} in {took:.1f} s"
    if pattern is not None:
        summary += f"; {'matched' if matched is not None else 'no match for'} {until!r}"
    return summary, {"port": port, "lines": lines, "seconds": round(took, 3), "matched": matched}
