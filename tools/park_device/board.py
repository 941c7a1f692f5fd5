"""A connection to a board's MicroPython REPL through the real mpremote transport.

Why mpremote's SerialTransport and not our own REPL client: it is the tool technicians
already trust, it speaks raw-paste flow control to real ESP32s, and it accepts pyserial
URLs (socket://) as well as /dev/tty* and ptys. Here we only add typed errors, one-trip
helpers (hash many files in one exec), and atomic file replacement on the board.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import sys
import time
from typing import Callable, Iterable

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from .errors import BoardError, NoAnswer, NoPort, PortBusy
from .ports import resolve

CHUNK = 2048
"""Bytes per write command: raw-paste flow control makes large chunks safe on an ESP32 too."""

# Board-side helpers, sent once per connection. Names start with _pd_ to stay out of the way.
_HELPERS = r"""
import os, json, hashlib, binascii
def _pd_sha(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256(); b = bytearray(512); m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _pd_hashes(ps):
    print(json.dumps([_pd_sha(p) for p in ps]))
def _pd_mkdirs(p):
    cur = ''
    for part in p.split('/'):
        if not part:
            continue
        cur += '/' + part
        try:
            os.mkdir(cur)
        except OSError as e:
            if e.args[0] != 17:
                raise
def _pd_replace(tmp, dst):
    try:
        os.rename(tmp, dst)
    except OSError:
        try:
            os.remove(dst)
        except OSError:
            pass
        os.rename(tmp, dst)
def _pd_rm(p):
    try:
        os.remove(p)
        return 1
    except OSError:
        return 0
def _pd_info():
    import sys, gc
    d = {'platform': sys.platform, 'version': '.'.join([str(x) for x in sys.implementation.version[:3]]),
         'mpy': getattr(sys.implementation, '_mpy', 0), 'machine': getattr(sys.implementation, '_machine', ''),
         'free': gc.mem_free()}
    try:
        s = os.statvfs('/')
        d['fs_free'] = s[0] * s[3]
    except (OSError, AttributeError):
        d['fs_free'] = None
    try:
        f = open('/config.json'); d['config'] = json.load(f); f.close()
    except (OSError, ValueError):
        d['config'] = None
    d['has_key'] = _pd_sha('/key.bin') is not None
    d['has_booking_key'] = _pd_sha('/booking.key') is not None
    print(json.dumps(d))
"""


class BoundedTransport(SerialTransport):
    """mpremote's serial transport with every wait bounded by a deadline.

    mpremote restarts its timeout at each received byte, so a board that never stops printing
    (a reboot loop) kept `enter_raw_repl` and every exec waiting forever. Here each wait ends
    after its timeout however much arrives, and `noise` counts what came in while waiting.
    """

    def __init__(self, *args, limit: float = 10.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.noise = 0

    def read_until(self, min_num_bytes, ending, timeout=10, data_consumer=None, timeout_overall=None):
        """Until `ending`, `timeout` s without a byte, or `timeout_overall` s in all (default: timeout)."""
        if timeout_overall is None:
            timeout_overall = self.limit if timeout is None else max(timeout, 1.0)
        data = b""
        start = last = time.monotonic()
        while not data.endswith(ending):
            now = time.monotonic()
            if now - start >= timeout_overall:
                break
            new = self.serial.read(1) if (self.is_pty or self.serial.in_waiting) else b""
            if new:
                last = now
                self.noise += 1
                if data_consumer:
                    data_consumer(new)
                    data = new
                else:
                    data += new
            elif timeout is not None and now - last >= timeout:
                break
            else:
                time.sleep(0.01)
        return data

    def drain(self, end: float) -> bool:
        """Read and drop what is waiting; False if the board was still printing at `end`."""
        while self.serial.in_waiting:
            if time.monotonic() >= end:
                return False
            self.noise += len(self.serial.read(self.serial.in_waiting))
        return True

    def enter_raw_repl(self, soft_reset=True, timeout_overall=10):
        end = time.monotonic() + timeout_overall
        self.serial.write(b"\r\x03")  # interrupt a running program
        if not self.drain(end):
            raise TransportError("the board kept printing for %g s" % timeout_overall)
        self.serial.write(b"\r\x01")  # raw REPL
        prompt = b"raw REPL; CTRL-B to exit\r\n"
        if soft_reset:
            data = self.read_until(1, prompt + b">", timeout_overall=max(end - time.monotonic(), 0.1))
            if not data.endswith(prompt + b">"):
                raise TransportError("could not enter raw repl")
            self.serial.write(b"\x04")  # soft reset: a fresh interpreter, firmware not started
            data = self.read_until(1, b"soft reboot\r\n", timeout_overall=max(end - time.monotonic(), 0.1))
            if not data.endswith(b"soft reboot\r\n"):
                raise TransportError("could not enter raw repl")
        data = self.read_until(1, prompt, timeout_overall=max(end - time.monotonic(), 0.1))
        if not data.endswith(prompt):
            raise TransportError("could not enter raw repl")
        self.in_raw_repl = True


def _lock_probe(port: str) -> None:
    """Open and close the port exclusively once, to tell 'missing' from 'busy' from 'forbidden'."""
    try:
        s = serial.serial_for_url(port, exclusive=True, timeout=0)
    except serial.SerialException as e:
        text = str(e)
        eno = getattr(e, "errno", None)
        if "exclusively lock" in text or eno in (errno.EBUSY, errno.EAGAIN):
            who = holders(port)
            raise PortBusy(f"{port} is in use" + (f" by {who}" if who else ""), where=port,
                           hint="close the other program (mpremote, screen, park-device monitor, park-gateway)") from None
        if eno == errno.ENOENT or "No such file" in text:
            raise NoPort(f"serial port {port} does not exist", where=port,
                         hint="`park-device ports` lists what is there") from None
        if eno == errno.EACCES or "Permission denied" in text:
            raise NoPort(f"no permission to open {port}", where=port,
                         hint="add yourself to the 'dialout' group and log in again") from None
        if "Connection refused" in text or eno == errno.ECONNREFUSED:
            raise NoPort(f"nothing listens at {port}", where=port, hint="is the virtual board running?") from None
        raise NoPort(f"cannot open {port}: {text}", where=port) from None
    else:
        s.close()


def holders(port: str) -> str:
    """Other processes (of this user) that have the device open, e.g. 'pid 1234 (screen)'."""
    try:
        target = os.path.realpath(port)
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            fd_dir = f"/proc/{pid}/fd"
            try:
                for fd in os.listdir(fd_dir):
                    if os.path.realpath(os.path.join(fd_dir, fd)) == target:
                        with open(f"/proc/{pid}/comm") as f:
                            found.append(f"pid {pid} ({f.read().strip()})")
                        break
            except OSError:
                continue
        return ", ".join(found)
    except OSError:
        return ""


class Board:
    """Raw-REPL session on one board. Use ``with Board.open(port) as b: ...``."""

    def __init__(self, transport: SerialTransport, port: str, timeout: float) -> None:
        self.t = transport
        self.port = port
        self.timeout = timeout
        self._helpers = False
        self._dirs: set[str] = set()

    @classmethod
    @contextlib.contextmanager
    def open(cls, port: str | None, timeout: float = 10.0, soft_reset: bool = True,
             serial_number: str | None = None):
        port = resolve(port, serial_number=serial_number)
        _lock_probe(port)
        try:
            # mpremote prints raw bytes on failure; keep stdout clean for --json.
            with contextlib.redirect_stdout(io.StringIO()):
                t = BoundedTransport(port, baudrate=115200, timeout=min(2.0, timeout), limit=timeout)
        except TransportError as e:
            raise PortBusy(f"cannot open {port}: {e}", where=port) from None
        board = cls(t, port, timeout)
        try:
            board._enter(soft_reset)
            yield board
        finally:
            try:
                if t.in_raw_repl:
                    t.exit_raw_repl()
            except (OSError, serial.SerialException):
                pass
            with contextlib.suppress(OSError, serial.SerialException):
                t.close()

    def _enter(self, soft_reset: bool) -> None:
        """Enter the raw REPL and prove it with one round trip (retried once, each try bounded by
        the timeout: a board still booting or printing its banner can swallow the first prompt)."""
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                for attempt in (1, 2):
                    try:
                        self.t.enter_raw_repl(soft_reset=soft_reset and attempt == 1, timeout_overall=self.timeout)
                        out, err = self.t.exec_raw("print('pd-ok')", timeout=min(self.timeout, 5))
                        if out.strip() == b"pd-ok":
                            return
                    except TransportError:  # the prompt or the echo was lost in what the board printed
                        if attempt == 2:
                            raise
                raise TransportError("the raw REPL did not echo a test command")
        except (TransportError, OSError, serial.SerialException) as e:
            if getattr(self.t, "noise", 0) > 512:
                raise NoAnswer(f"the board on {self.port} keeps printing and never stays at its REPL "
                               f"(a reboot loop?) within {self.timeout:g} s", where=self.port,
                               hint="`park-device recover` stops it and removes /main.py; then deploy and "
                                    "provision again") from e
            raise NoAnswer(f"no MicroPython REPL answered on {self.port} within {self.timeout:g} s", where=self.port,
                           hint="is MicroPython flashed (`park-device flash`)? is it the right port? "
                                "try pressing the board's reset button") from e

    # ---- execution -----------------------------------------------------------------
    def exec(self, code: str, timeout: float | None = None, consumer: Callable[[bytes], None] | None = None) -> bytes:
        """Run code in the raw REPL; a board-side exception becomes BoardError with its traceback."""
        try:
            out, err = self.t.exec_raw(code, timeout=timeout or self.timeout, data_consumer=consumer)
        except TransportError as e:
            raise NoAnswer(f"the board stopped answering on {self.port}: {e}", where=self.port) from e
        except (OSError, serial.SerialException) as e:
            raise NoAnswer(f"lost the connection to {self.port}: {e}", where=self.port) from e
        if err:
            raise BoardError(err.decode(errors="replace").strip().splitlines()[-1], where=self.port,
                             hint="board traceback:\n" + err.decode(errors="replace"))
        return out

    def call_json(self, code: str, timeout: float | None = None):
        self._ensure_helpers()
        out = self.exec(code, timeout)
        try:
            return json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise BoardError(f"unexpected answer from the board: {out[:200]!r}", where=self.port) from e

    def _ensure_helpers(self) -> None:
        if not self._helpers:
            self.exec(_HELPERS)
            self._helpers = True

    # ---- queries -------------------------------------------------------------------
    def info(self) -> dict:
        return self.call_json("_pd_info()")

    def hashes(self, paths: Iterable[str]) -> dict[str, str | None]:
        paths = list(paths)
        res: dict[str, str | None] = {}
        for i in range(0, len(paths), 40):
            chunk = paths[i:i + 40]
            res.update(zip(chunk, self.call_json(f"_pd_hashes({chunk!r})")))
        return res

    def read_file(self, path: str) -> bytes | None:
        self._ensure_helpers()
        if self.hashes([path])[path] is None:
            return None
        return bytes(self.t.fs_readfile(path, chunk_size=512))

    # ---- changes -------------------------------------------------------------------
    def mkdirs(self, path: str) -> None:
        self._ensure_helpers()
        self.exec(f"_pd_mkdirs({path!r})")

    def write_file(self, path: str, data: bytes, progress: Callable[[int, int], None] | None = None) -> None:
        """Write to path.part, then rename over path: a cut cable never leaves half a file under the real name."""
        self._ensure_helpers()
        parent = path.rsplit("/", 1)[0]
        if parent and parent not in self._dirs:
            self.mkdirs(parent)
            self._dirs.add(parent)
        tmp = path + ".part"
        try:
            # base64, not repr(): binary .mpy data costs ~1.3 characters per byte instead of up to 4
            self.exec(f"_pd_f=open({tmp!r},'wb')")
            for i in range(0, len(data), CHUNK):
                chunk = data[i:i + CHUNK]
                self.exec(f"_pd_f.write(binascii.a2b_base64({base64.b64encode(chunk)!r}))")
                if progress:
                    progress(i + len(chunk), len(data))
            self.exec("_pd_f.close()")
        except BoardError as e:
            raise BoardError(f"writing {path} failed: {e.message}", where=path,
                             hint="is the board's file system full?") from None
        except TransportExecError as e:
            raise BoardError(f"writing {path} failed: {e.error_output.strip().splitlines()[-1]}", where=path,
                             hint="is the board's file system full?") from None
        except OSError as e:
            raise BoardError(f"writing {path} failed: {e}", where=path, hint="is the board's file system full?") from None
        except TransportError as e:
            raise NoAnswer(f"the board stopped answering while writing {path}: {e}", where=self.port) from e
        self.exec(f"_pd_replace({tmp!r}, {path!r})")

    def remove(self, path: str) -> bool:
        self._ensure_helpers()
        return self.call_json(f"print(_pd_rm({path!r}))") == 1

    def restart(self) -> None:
        """Reset the board (machine.reset) so the firmware starts from a clean boot with the new files.

        A soft reboot would keep the interpreter's peripherals half set up; a reset is what a
        power cycle does, and the runtime's boot counter treats it as a normal boot.
        """
        with contextlib.suppress(OSError, serial.SerialException, TransportError):
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
            self.t.serial.flush()
        self.t.in_raw_repl = False
