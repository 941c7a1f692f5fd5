"""recover: bring a board that will not stay at its REPL back to a known state, without esptool.

The known state: MicroPython idle at its REPL after a reset, with no /main.py (so nothing
starts by itself); the firmware's packages, /config.json and the keys stay, so `deploy` and
`provision` can be run again at once. A board in a reboot loop is caught between two boots:
bursts of Ctrl-C stop what runs, and the very first raw-REPL command removes /main.py before
anything else is asked of the board. Every wait is bounded by --timeout.
"""
from __future__ import annotations

import time

import serial

from .board import Board, _lock_probe
from .errors import NoAnswer, NoRecovery
from .ports import resolve
from .roles import ROLES

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
# one line per outcome, so a reply cut short by the next reset is not mistaken for success
DISARM = (b"import os\r\ntry:\r\n os.remove('/main.py')\r\n print('pd-removed')\r\n"
          b"except OSError:\r\n print('pd-absent')\r\n")


def _read_until(s: serial.Serial, pattern: bytes, end: float) -> bytes:
    buf = b""
    while pattern not in buf and time.monotonic() < end:
        buf += s.read(max(1, min(s.in_waiting, 4096)))
    return buf


def disarm(s: serial.Serial, timeout: float) -> tuple[str, int, float]:
    """Interrupt until one raw-REPL command removed /main.py: ("removed"|"absent", attempts, seconds)."""
    start = time.monotonic()
    end = start + timeout
    attempts = 0
    while time.monotonic() < end:
        attempts += 1
        s.write(b"\r\x03\x03\x03")
        _read_until(s, b"\x00", min(end, time.monotonic() + 0.05))   # let the interrupt land
        s.reset_input_buffer()
        s.write(b"\r\x01")
        if RAW_PROMPT not in _read_until(s, RAW_PROMPT, min(end, time.monotonic() + 0.5)):
            continue
        s.write(DISARM + b"\x04")
        reply = _read_until(s, b"\x04>", min(end, time.monotonic() + 2.0))
        for word in ("removed", "absent"):
            if b"OK" in reply and f"pd-{word}".encode() in reply:
                s.write(b"\x02")  # back to the friendly REPL
                return word, attempts, time.monotonic() - start
    raise NoRecovery(f"the board did not stop within {timeout:g} s ({attempts} interrupt bursts)",
                     where=s.port, hint="hold the board's BOOT button while pressing reset and run "
                                        "`park-device flash --erase` (this loses its files and keys)")


def recover(ui, port: str | None, *, timeout: float = 10.0, restart: bool = True,
            serial_number: str | None = None) -> tuple[str, dict]:
    port = resolve(port, serial_number=serial_number)
    _lock_probe(port)
    s = serial.serial_for_url(port, baudrate=115200, timeout=0.05, exclusive=True)
    try:
        ui.note(f"interrupting the board on {port} (up to {timeout:g} s)")
        main_py, attempts, took = disarm(s, timeout)
    finally:
        s.close()

    with Board.open(port, timeout=timeout, soft_reset=False) as b:
        info = b.info()
        have = b.hashes([f"/lib/{r}/app.{ext}" for r in ROLES for ext in ("mpy", "py")])
        if restart:
            b.restart()
    deployed = sorted({p.split("/")[2] for p, h in have.items() if h is not None})
    cfg = info.get("config") or {}
    verified = False
    if restart:
        end = time.monotonic() + timeout
        while True:
            try:
                with Board.open(port, timeout=max(1.0, min(5.0, end - time.monotonic())), soft_reset=False) as b:
                    verified = b.call_json("print(json.dumps(_pd_sha('/main.py') is None))")
                break
            except NoAnswer:
                if time.monotonic() >= end:
                    raise NoRecovery(f"the board did not come back to its REPL within {timeout:g} s after the "
                                     "reset", where=port, hint="press the board's reset button, then run "
                                                               "recover again") from None
    result = {"port": port, "main_py": main_py, "attempts": attempts, "seconds": round(took, 2),
              "firmware": deployed, "identity": {k: cfg.get(k) for k in ("id", "role", "site")} if cfg else None,
              "has_key": info.get("has_key"), "restarted": restart, "idle_after_reset": verified}
    did = "removed /main.py" if main_py == "removed" else "no /main.py to remove"
    what = (f"{did} after {attempts} interrupt burst(s) ({took:.1f} s)"
            + ("; reset, idle at its REPL" if verified else "; not reset (--no-restart)"))
    fw = ", ".join(deployed) or "none"
    ident = f"{cfg.get('id')} ({cfg.get('role')})" if cfg else "not provisioned"
    return (f"recover: {port}: {what}; firmware on it: {fw}; identity: {ident}. "
            f"Next: park-device deploy --role ROLE, then provision", result)
