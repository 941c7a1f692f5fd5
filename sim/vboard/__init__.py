"""vboard: virtual ESP32 boards running unmodified park-edge firmware in genuine MicroPython.

Why: CI has no ESP32s, but firmware must run in the real interpreter with its real
asyncio, heap and file APIs. A virtual board is one Node process (sim/vboard/board.mjs)
running the official MicroPython WebAssembly VM; only the hardware is simulated
(sim/vmachine: machine, clock/vclock). Labgrid-style split: the *resource*
is where the board is (``link_url``, ``console_pty``, ``flash_path``), the *driver* is
this class (power, clock, peripherals).

    with VirtualBoard(deploy_dir="firmware/container_sensor", flash_dir=tmp) as b:
        b.set_distance_mm(420)
        b.advance(3_600_000)                 # one virtual hour, runs in well under a second
        assert b.events("deepsleep")
        ser = serial.serial_for_url(b.link_url)   # the gateway side of the link UART

See docs/virtual-boards.md.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import tty
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sim import mpvm
from sim.mpvm import MpvmUnavailable

__all__ = [
    "VirtualBoard", "VboardError", "BoardStartError", "PortBusyError", "BoardHungError",
    "BoardNotRunning", "MpvmUnavailable", "RESET_CAUSES", "VMACHINE_DIR", "ESP32_FREE_HEAP",
    "RADIO_HEAP_COST", "ROLE_RADIO", "HEAP_REFUSAL", "esp32_heap_budget", "role_heap_budget",
    "PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET",
]

HERE = Path(__file__).resolve().parent
BOARD_JS = HERE / "board.mjs"
REPO = HERE.parent.parent
VMACHINE_DIR = HERE.parent / "vmachine"

# An ESP32 without PSRAM, stock MicroPython 1.27: the Python heap starts as one area (56 KiB on
# the classic ESP32, 64 KiB on later chips: ports/esp32/mpconfigport.h) and grows on demand
# (MICROPY_GC_SPLIT_HEAP_AUTO) out of the ESP-IDF heap, which the radio stacks share; gc.mem_free()
# adds the IDF heap's largest free block (py/modgc.c). It reports about 134 KB at boot (micropython issue 18859;
# 110-114 KB on older releases, issues 5554 and 7043). Activating a radio takes its stack's
# memory from the same RAM: about 45 KB for the Wi-Fi station (arduino-esp32 issue 8033:
# 45,656 B for WIFI_STA) and about 32 KB for NimBLE (Moddable issue 640). The budget of a
# virtual board is the live Python data it may hold: past it (after a collection) the
# firmware gets MemoryError at its next await, as the chip would have refused an allocation.
ESP32_FREE_HEAP = 134_000
RADIO_HEAP_COST = {None: 0, "serial": 0, "ble": 32_000, "wifi": 45_000}


HEAP_REFUSAL = "fw_heap_budget"
"""The event a board records when it refuses an allocation past its heap budget (sim/vmachine/_vboard_boot.py)."""


def esp32_heap_budget(radio: str | None = None) -> int:
    """The Python heap an ESP32 without PSRAM leaves a firmware with `radio` active."""
    return ESP32_FREE_HEAP - RADIO_HEAP_COST[radio]


ROLE_RADIO = {"container_sensor": "ble", "light_pole": "wifi", "locker": "wifi"}
"""The radio each role runs in the park (issue 10): its stack's memory is gone whatever link a test uses."""


def role_heap_budget(flash: Path) -> int | None:
    """The budget of the role in a flash image's /config.json (with its park radio active), or
    None when there is no such config (a bare test program: the heap grows like a PC's)."""
    try:
        role = json.loads((flash / "config.json").read_text()).get("role")
    except (OSError, ValueError, AttributeError):
        return None
    radio = ROLE_RADIO.get(role) if isinstance(role, str) else None
    return esp32_heap_budget(radio) if radio else None


PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
RESET_CAUSES = {"power": PWRON_RESET, "hard": HARD_RESET, "wdt": WDT_RESET,
                "deepsleep": DEEPSLEEP_RESET, "soft": SOFT_RESET}


class VboardError(Exception):
    """Base class for virtual-board errors."""


class BoardStartError(VboardError):
    """The board process or its firmware did not come up."""


class PortBusyError(BoardStartError):
    """The requested TCP port for the link or console is already in use."""


class BoardHungError(VboardError):
    """The firmware stopped returning to its scheduler and no WDT was armed to reset it."""


class BoardNotRunning(VboardError):
    """The board is stopped (or was never started)."""


_live: "weakref.WeakSet[VirtualBoard]" = weakref.WeakSet()


@atexit.register
def _kill_all() -> None:
    for b in list(_live):
        b._kill()


class VirtualBoard:
    """One virtual ESP32 (a Node process with a fresh MicroPython VM per boot).

    firmware_files: {vm_path: host_path} copied into the flash before boot (like
    ``mpremote cp``); deploy_dir: a directory whose tree is copied to the flash root.
    flash_dir: the persistent flash (host dir, survives reboots and board objects);
    a temp dir when omitted. realtime=False (default) steps a virtual clock only when
    the host calls advance(); realtime=True lets it run with the wall clock (demos,
    gateway integration).
    heap_budget: the live Python heap the firmware may hold (MemoryError past it, as on the chip;
    the simulator's own modules are not counted). The default "role" is the ESP32 budget of the
    role in the deployed /config.json with its park radio active (ROLE_RADIO; none without a
    config); an int sets it, None lets the heap grow like a PC's.
    """

    def __init__(self, firmware_files: Mapping[str, str | os.PathLike] | None = None,
                 deploy_dir: str | os.PathLike | None = None, flash_dir: str | os.PathLike | None = None,
                 main: str = "main.py", realtime: bool = False, *, start_time: float | None = None,
                 link_uart: int = 1, link_port: int = 0, console_pty: bool = True,
                 console_port: int | None = None, pins: Mapping[str, int] | None = None,
                 ultrasonic: Mapping[str, int] | None = None, distance_mm: float | None = None,
                 temperature_c: float = 20.0, heap_bytes: int = 134 * 1024, heap_mode: str = "alloc",
                 heap_budget: int | str | None = "role",
                 patch_time: bool = True, console_soft_reset: str = "ignore", uid: bytes | None = None,
                 record_pins: bool = False, record_pwm: bool = False, record_wdt_feeds: bool = True,
                 hang_timeout: float = 10.0, start_timeout: float = 15.0, name: str = "vboard",
                 wifi: Mapping[str, Any] | None = None, without: Iterable[str] = ()) -> None:
        if heap_mode not in ("alloc", "live"):
            raise ValueError("heap_mode must be 'alloc' or 'live'")
        if heap_budget == "role":
            pass  # resolved from the deployed /config.json at start()
        elif heap_budget is not None:
            if isinstance(heap_budget, str) or heap_budget < 64 * 1024:
                raise ValueError("heap_budget must be 'role', None or at least 64 KiB (an ESP32's first heap area)")
        if console_soft_reset not in ("ignore", "reboot"):
            raise ValueError("console_soft_reset must be 'ignore' or 'reboot'")
        self.name = name
        self.realtime = realtime
        self.main = main.lstrip("/")
        self._own_flash = flash_dir is None
        self.flash_path = Path(flash_dir) if flash_dir else Path(tempfile.mkdtemp(prefix=f"{name}-flash-"))
        self.flash_path.mkdir(parents=True, exist_ok=True)
        self._firmware_files = dict(firmware_files or {})
        self._deploy_dir = Path(deploy_dir) if deploy_dir else None
        self._pins = dict(pins or {})
        self._cfg = {
            "realtime": realtime, "main": self.main, "link_uart": link_uart, "link_port": link_port,
            "console_port": console_port, "ultrasonic": self._resolve_pins(ultrasonic) if ultrasonic else None,
            "distance_mm": distance_mm, "temperature_c": temperature_c, "heap_bytes": heap_bytes,
            "heap_budget": heap_budget, "heap_mode": heap_mode, "patch_time": patch_time, "console_soft_reset": console_soft_reset,
            "uid": (uid or os.urandom(6)).hex(), "record_pins": record_pins, "record_pwm": record_pwm,
            "record_wdt_feeds": record_wdt_feeds, "hang_timeout_ms": int(hang_timeout * 1000),
            "start_unix_ms": int((time.time() if start_time is None else start_time) * 1000),
            "vmachine_dir": str(VMACHINE_DIR), "wifi": self._wifi_cfg(wifi),
            "without": list(without),  # simulated modules this chip lacks, e.g. ("bluetooth",)
        }
        self._ble_listeners: list[Callable[[dict], None]] = []
        self.ble_state: dict[str, Any] = {"on": False, "adv": None, "pref_mtu": 23}  # the radio as last reported
        self._want_pty = console_pty
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._wlock = threading.Lock()  # one control line at a time, from any thread
        self._cond = threading.Condition(self._lock)
        self._replies: dict[int, dict] = {}
        self._seq = 0
        self._events: list[dict] = []
        self._log: list[str] = []
        self._stderr: list[str] = []
        self._notes: dict[str, Any] = {}
        self._pty_slave: int | None = None
        self.console_pty: str | None = None
        self.link_port: int | None = None
        self.console_port: int | None = None
        self._cfg_file: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def _wifi_cfg(wifi: Mapping[str, Any] | None) -> dict | None:
        """The access point in the board's range: ssid, psk, up (in range), gateway (host, port):
        the real TCP address every connect of the firmware reaches (None: refused)."""
        if wifi is None:
            return None
        unknown = set(wifi) - {"ssid", "psk", "up", "gateway"}
        if unknown:
            raise ValueError(f"wifi: unknown keys {sorted(unknown)}")
        gw = wifi.get("gateway")
        return {"ssid": str(wifi.get("ssid", "")), "psk": str(wifi.get("psk", "")), "up": bool(wifi.get("up", True)),
                "gateway": [str(gw[0]), int(gw[1])] if gw else None}

    def _resolve_pins(self, m: Mapping[str, Any]) -> dict:
        return {k: self._pin(v) for k, v in m.items()}

    def _pin(self, p: str | int) -> int | str:
        if isinstance(p, str) and p in self._pins:
            return self._pins[p]
        return p

    def _deploy(self) -> None:
        if self._deploy_dir:
            if not self._deploy_dir.is_dir():
                raise FileNotFoundError(f"deploy_dir {self._deploy_dir} is not a directory")
            for src in self._deploy_dir.rglob("*"):
                if "__pycache__" in src.parts or src.suffix == ".pyc":
                    continue
                dst = self.flash_path / src.relative_to(self._deploy_dir)
                if src.is_dir():
                    dst.mkdir(parents=True, exist_ok=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
        for vm, host in self._firmware_files.items():
            dst = self.flash_path / str(vm).lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(host, dst)

    def start(self) -> "VirtualBoard":
        """Deploy firmware into the flash, launch the board and wait until main.py settled."""
        if self._proc is not None:
            raise VboardError("board already started")
        node = mpvm.ensure()
        self._deploy()
        cfg = dict(self._cfg, flash_dir=str(self.flash_path))
        if cfg["heap_budget"] == "role":
            cfg["heap_budget"] = role_heap_budget(self.flash_path)
        self.heap_budget = cfg["heap_budget"]
        if self.heap_budget is not None:
            cfg["heap_bytes"] = 64 * 1024  # the ESP32 port's first area; the rest is grown on demand
        pass_fds: tuple[int, ...] = ()
        master = None
        if self._want_pty:
            master, slave = os.openpty()
            tty.setraw(slave)           # a serial line: no echo, no line discipline
            self._pty_slave = slave     # held open so the master never sees a hangup
            self.console_pty = os.ttyname(slave)
            cfg["console_fd"] = master
            pass_fds = (master,)
        fd, self._cfg_file = tempfile.mkstemp(prefix="vboard-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f)
        try:
            self._proc = subprocess.Popen([node, str(BOARD_JS), self._cfg_file], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds,
                                          start_new_session=True)
        finally:
            if master is not None:
                os.close(master)
        _live.add(self)
        self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-ctl", daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_stderr, name=f"{self.name}-err", daemon=True).start()
        deadline = time.monotonic() + self._start_timeout
        with self._cond:
            while "started" not in self._notes and "fatal" not in self._notes and self._proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            fatal = self._notes.get("fatal")
            ok = "started" in self._notes
        if not ok:
            err = "".join(self._stderr)[-3000:]
            logs = "\n".join(self._log[-30:])
            self._kill()
            if fatal and fatal.get("kind") == "port_busy":
                raise PortBusyError(fatal["error"])
            why = fatal["error"] if fatal else ("timed out" if self._proc_alive_timeout() else "process exited")
            raise BoardStartError(f"board {self.name!r} did not start: {why}\nstderr:\n{err}\nlog:\n{logs}")
        lst = self._notes["listening"]
        self.link_port = lst["link_port"]
        self.console_port = lst.get("console_port")
        return self

    def _proc_alive_timeout(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Sync the flash to flash_path and end the board process (never leaks it)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._call("stop", timeout=5)
            except VboardError:
                pass
        self._kill()

    def _kill(self) -> None:
        p = self._proc
        if p is not None:
            try:
                if p.stdin:
                    p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if self._pty_slave is not None:
            try:
                os.close(self._pty_slave)
            except OSError:
                pass
            self._pty_slave = None
        if self._cfg_file:
            try:
                os.unlink(self._cfg_file)
            except OSError:
                pass
            self._cfg_file = None
        _live.discard(self)

    def __enter__(self) -> "VirtualBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> "VirtualBoard":
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ control channel
    def _read_loop(self) -> None:
        assert self._proc and self._proc.stdout
        for raw in self._proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("ev") == "ble":
                k = msg.get("k")
                if k == "adv":
                    self.ble_state["adv"] = msg.get("hex")
                elif k == "pref_mtu":
                    self.ble_state["pref_mtu"] = msg.get("arg")
                elif k in ("on", "off"):
                    self.ble_state.update(on=k == "on", adv=None)
                for fn in list(self._ble_listeners):
                    fn(msg)
                continue
            with self._cond:
                if "id" in msg:
                    self._replies[msg["id"]] = msg
                elif msg.get("ev") == "event":
                    self._events.append(msg["event"])
                elif msg.get("ev") == "log":
                    self._log.append(msg["line"])
                elif msg.get("ev") == "stderr":
                    self._stderr.append(msg["text"] + "\n")
                elif msg.get("ev"):
                    self._notes[msg["ev"]] = msg
                self._cond.notify_all()
        with self._cond:
            self._notes["exited"] = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc and self._proc.stderr
        for raw in self._proc.stderr:
            with self._cond:
                self._stderr.append(raw.decode(errors="replace"))

    def _call(self, cmd: str, timeout: float | None = 60, **args: Any) -> Any:
        p = self._proc
        if p is None or p.poll() is not None:
            raise BoardNotRunning(f"board {self.name!r} is not running")
        with self._cond:
            self._seq += 1
            mid = self._seq
        line = json.dumps(dict(args, id=mid, cmd=cmd)) + "\n"
        try:
            assert p.stdin
            with self._wlock:
                p.stdin.write(line.encode())
                p.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise BoardNotRunning(f"board {self.name!r} control channel closed: {e}") from e
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if "exited" in self._notes:
                    raise BoardNotRunning(f"board {self.name!r} exited\n{''.join(self._stderr)[-2000:]}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise VboardError(f"board {self.name!r}: no reply to {cmd!r} within {timeout} s")
                self._cond.wait(left)
            rep = self._replies.pop(mid)
        if not rep.get("ok"):
            err = rep.get("error", "")
            if "firmware hung" in err:
                raise BoardHungError(err)
            if "board is" in err:
                raise BoardNotRunning(err)
            raise VboardError(f"{cmd}: {err}")
        return rep.get("result")

    # ------------------------------------------------------------------ clock and power
    def advance(self, ms: float, timeout: float | None = 600) -> int:
        """Stepped mode: run everything due in the next `ms` virtual ms; returns now_ms."""
        if self.realtime:
            raise VboardError("advance() needs realtime=False")
        return self._call("advance", ms=float(ms), timeout=timeout)["now_ms"]

    async def aadvance(self, ms: float) -> int:
        return await asyncio.to_thread(self.advance, ms)

    def run_until(self, predicate: Callable[["VirtualBoard"], bool], step_ms: float = 100,
                  max_ms: float = 3_600_000) -> int:
        """Advance in steps until predicate(board) is true; returns virtual ms spent."""
        spent = 0.0
        while not predicate(self):
            if spent >= max_ms:
                raise VboardError(f"condition not met within {max_ms} virtual ms")
            self.advance(step_ms)
            spent += step_ms
        return int(spent)

    def power_cycle(self, off_ms: float = 0) -> None:
        """Brown-out / power cut: VM and RTC memory lost, flash kept, reboot with PWRON_RESET."""
        self._call("power_cycle", off_ms=off_ms)

    def reset(self) -> None:
        """Press EN: hard reset (HARD_RESET), flash kept."""
        self._call("reset", kind="hard")

    def wake(self) -> bool:
        """External wake source: end a deep sleep now (boots with DEEPSLEEP_RESET)."""
        return self._call("wake")["woke"]

    def state(self) -> dict:
        return self._call("state")

    @property
    def now_ms(self) -> float:
        return self.state()["now_ms"]

    @property
    def unix_time(self) -> float:
        return self.state()["unix_ms"] / 1000

    @property
    def boots(self) -> int:
        return self.state()["boots"]

    @property
    def link_url(self) -> str:
        """pyserial URL of the link UART: serial.serial_for_url(board.link_url)."""
        if self.link_port is None:
            raise BoardNotRunning("board not started")
        return f"socket://127.0.0.1:{self.link_port}"

    @property
    def console_url(self) -> str | None:
        return f"socket://127.0.0.1:{self.console_port}" if self.console_port else None

    # ------------------------------------------------------------------ radios
    def set_wifi(self, **changes: Any) -> None:
        """Change the access point: up=False takes it out of range (the firmware's TCP
        connections drop), gateway=(host, port) moves the gateway."""
        cur = dict(self._cfg["wifi"] or {"ssid": "", "psk": "", "up": True, "gateway": None}, **changes)
        self._cfg["wifi"] = self._wifi_cfg(cur)
        self._call("wifi", wifi=self._cfg["wifi"])

    def ble_listen(self, fn: Callable[[dict], None]) -> None:
        """fn(event) for each radio event of the board, on the board's reader thread:
        {k: on|off|adv|notify|disconnect|pref_mtu, ...} (sim/vboard_ble.py uses it)."""
        self._ble_listeners.append(fn)

    def ble_send(self, k: str, conn: int = 0, arg: int = 0, data: str = "") -> None:
        """A central's action (connect, write, disconnect) to the board's controller; does not wait."""
        p = self._proc
        if p is None or p.poll() is not None or p.stdin is None:
            raise BoardNotRunning(f"board {self.name!r} is not running")
        line = json.dumps({"cmd": "ble", "k": k, "conn": conn, "arg": arg, "data": data}) + "\n"
        with self._wlock:
            try:
                p.stdin.write(line.encode())
                p.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                raise BoardNotRunning(f"board {self.name!r} control channel closed: {e}") from e

    # ------------------------------------------------------------------ peripherals
    def set_pin(self, pin: str | int, value: int | bool) -> None:
        """Drive an input pin (edge IRQs fire; stepped mode lets the firmware react)."""
        self._call("set_pin", pin=self._pin(pin), value=1 if value else 0)

    def set_adc(self, pin: str | int, value: int | None = None, *, uv: int | None = None) -> None:
        """ADC input as raw read_u16 value or as microvolts (scaled by the pin's attenuation)."""
        if (value is None) == (uv is None):
            raise ValueError("give value (u16) or uv")
        v = {"u16": int(value)} if value is not None else {"uv": int(uv)}
        self._call("set_adc", pin=self._pin(pin), value=v)

    def set_distance_mm(self, mm: float | None) -> None:
        """Distance the ultrasonic sensor sees (None = no echo)."""
        self._call("set_inputs", inputs={"distance_mm": mm})

    def set_temperature_c(self, c: float) -> None:
        """Air temperature: changes the speed of sound for time_pulse_us."""
        self._call("set_inputs", inputs={"temperature_c": c})

    def uart_write(self, uart: int, data: bytes) -> None:
        """Feed bytes to the firmware's machine.UART(uart) (for UARTs other than the link)."""
        self._call("uart_write", uart=uart, hex=bytes(data).hex())

    def uart_read(self, uart: int) -> bytes:
        """Bytes the firmware wrote to machine.UART(uart) since the last call (not the link)."""
        return bytes.fromhex(self._call("uart_read", uart=uart)["hex"])

    def pin(self, pin: str | int) -> int | None:
        """Level an output pin is driven to (None if never driven)."""
        return self.state()["pins"].get(str(self._pin(pin)))

    def pwm_duty(self, pin: str | int) -> int | None:
        p = self.state()["pwm"].get(str(self._pin(pin)))
        return None if p is None else p["duty_u16"]

    def pwm_freq(self, pin: str | int) -> int | None:
        p = self.state()["pwm"].get(str(self._pin(pin)))
        return None if p is None else p["freq"]

    def gc_high_water(self) -> int:
        """Peak gc.mem_alloc() sampled at every await of the virtual clock and after each step."""
        return self.state()["heap_peak"]

    def reset_gc_high_water(self) -> None:
        self._call("reset_heap_peak")

    def live_heap(self) -> int:
        """gc.mem_alloc() after a collection made by the worker between the firmware's turns: the
        live data as a chip's collector would find it. A collection made from Python finds more: the
        WebAssembly port keeps the running step's garbage, and the entries of its proxy tables for
        every object handed to JavaScript, alive until JavaScript finalizes them."""
        return self._call("live_heap")["live"]

    # ------------------------------------------------------------------ observations
    def events(self, type: str | Iterable[str] | None = None) -> list[dict]:
        """Recorded events (boot, reset, deepsleep, pulse, wdt_start, wdt_feed, fw_crash, ...)."""
        types = {type} if isinstance(type, str) else (set(type) if type else None)
        with self._lock:
            return [e for e in self._events if types is None or e["type"] in types]

    def heap_refusals(self) -> list[dict]:
        """The board's MemoryErrors past its heap budget ({"used", "budget"} each; the firmware's
        `fw_heap_budget` event: one per boot, at the first refusal)."""
        return self.events(HEAP_REFUSAL)

    def clear_events(self) -> None:
        with self._lock:
            self._events.clear()

    def log(self) -> list[str]:
        """Lines the firmware printed (console output outside REPL commands)."""
        with self._lock:
            return list(self._log)

    def wait_for(self, what: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait (wall clock) until what() is truthy; wakes on every board notification."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._lock.release()
                try:
                    r = what()
                finally:
                    self._lock.acquire()
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0 or "exited" in self._notes:
                    raise VboardError(f"condition not met within {timeout} s")
                self._cond.wait(left)

    def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        rx = re.compile(pattern)
        return self.wait_for(lambda: next((ln for ln in self.log() if rx.search(ln)), None), timeout)

    def wait_event(self, type: str, timeout: float = 10.0, count: int = 1) -> dict:
        return self.wait_for(lambda: (lambda ev: ev[count - 1] if len(ev) >= count else None)(self.events(type)),
                             timeout)

    # ------------------------------------------------------------------ flash
    def sync_flash(self) -> Path:
        """Make flash_path current (it is also synced after every step and at reboot/stop)."""
        if self._proc is not None and self._proc.poll() is None:
            self._call("sync_flash")
        return self.flash_path

    def read_flash(self, name: str) -> bytes:
        self.sync_flash()
        return (self.flash_path / name.lstrip("/")).read_bytes()

    def write_flash(self, name: str, data: bytes | str) -> None:
        """Seed a flash file; takes effect at the next boot if the board is running."""
        p = self.flash_path / name.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    def __repr__(self) -> str:
        return f"<VirtualBoard {self.name} link={self.link_port} console={self.console_pty}>"
