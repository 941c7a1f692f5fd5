"""The bench, labgrid-style: resources (where a board is), drivers (how to act on it), a strategy
(how to bring it to a state). The description file says which boards exist and which
features the bench has; tests ask for features and are skipped with the reason when absent.

    resources   VirtualBoardResource (a vboard: console pty, link URL)
                SerialBoardResource  (a real ESP32 found by USB serial number, link UART)
                RelayResource        (shell commands that switch a board's power)
    drivers     ConsoleDriver   park-device on the console port (deploy/provision/selftest)
                PeripheralDriver sensors and actuators (virtual boards only)
                PowerDriver     power cycle / brown-out (vboard or relay)
    strategy    BoardStrategy.to("running"): [flash] -> deploy -> provision -> running
"""
from __future__ import annotations

import io
import shlex
import socket
import struct
import subprocess
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from park_device import ports, roles
from park_device.deploy import deploy
from park_device.provision import provision
from park_device.ui import UI

KNOWN_FEATURES = {"peripherals", "power", "brownout", "link_unplug", "gateway_kill", "broker_outage", "clock"}


class BenchError(Exception):
    """The bench description is wrong; says which file and key."""


@dataclass
class BoardSpec:
    id: str
    role: str
    kind: str
    position: str | None = None
    usb_serial: str | None = None
    link_usb_serial: str | None = None
    relay_channel: int | None = None
    link: str | None = None  # serial | wifi | ble; default: park_radio(kind, role)


LINKS = ("serial", "wifi", "ble")
WIFI_AP = {"ssid": "hil-park", "psk": "hil-bench-passphrase"}  # the virtual access point of a virtual bench
GATEWAY_ADDR = "10.0.0.1:7000"  # what a Wi-Fi board's config names; the virtual station reaches the gateway


def park_radio(kind: str, role: str) -> str:
    """A board's link when the bench does not say: real boards their link UART; virtual boards
    the radio they use in the park: poles and lockers Wi-Fi to the gateway's TCP server, bins BLE
    to its pool (through hil_tests/radio.py's air between the test and the daemon's process)."""
    return roles.PARK_RADIO.get(role, "serial") if kind == "virtual" else "serial"


@dataclass
class Bench:
    name: str
    site: str
    features: set[str]
    boards: list[BoardSpec]
    path: Path
    relay: dict | None = None
    firmware_image: str | None = None

    def board(self, id: str) -> BoardSpec:
        for b in self.boards:
            if b.id == id:
                return b
        raise BenchError(f"{self.path}: no board {id!r} on bench {self.name}")

    def missing(self, needed) -> list[str]:
        return sorted(set(needed) - self.features)


def load(path: str | Path) -> Bench:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"{path}: {e}") from None
    b = doc.get("bench") or {}
    feats = set(b.get("features", []))
    unknown = feats - KNOWN_FEATURES
    if unknown:
        raise BenchError(f"{path}: bench.features: unknown {sorted(unknown)}; known: {sorted(KNOWN_FEATURES)}")
    boards = []
    for i, raw in enumerate(doc.get("boards", [])):
        try:
            spec = BoardSpec(**raw)
        except TypeError as e:
            raise BenchError(f"{path}: boards[{i}]: {e}") from None
        if spec.kind not in ("virtual", "serial"):
            raise BenchError(f"{path}: boards[{i}].kind must be 'virtual' or 'serial', not {spec.kind!r}")
        if spec.kind == "serial" and not spec.usb_serial:
            raise BenchError(f"{path}: boards[{i}] ({spec.id}): a serial board needs usb_serial")
        if spec.link is None:
            spec.link = park_radio(spec.kind, spec.role)
        if spec.link not in LINKS:
            raise BenchError(f"{path}: boards[{i}].link must be one of {', '.join(LINKS)}, not {spec.link!r}")
        if spec.link != "serial" and spec.kind != "virtual":
            raise BenchError(f"{path}: boards[{i}] ({spec.id}): a real board's radio needs the bench's access "
                             "point or BLE adapter, which this bench does not describe yet; use 'serial'")
        boards.append(spec)
    if "peripherals" in feats and any(s.kind != "virtual" for s in boards):
        raise BenchError(f"{path}: 'peripherals' is only available with virtual boards")
    return Bench(b.get("name", path.stem), b.get("site", "stadtpark"), feats, boards, path,
                 (doc.get("power") or {}).get("relay"), b.get("firmware_image"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(pred, timeout: float = 30, what: str = "condition", every: float = 0.05):
    """Poll pred() until truthy (returned) or raise AssertionError after timeout. The deadline
    bounds a hang; it is not a timing assertion. Independent of any board notification."""
    import time
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(every)


def known_bug(ok: bool, reason: str) -> None:
    """One assertion marked xfail(strict=True) for a bug in another engineer's part: call it
    after every other assertion of the test. Fails (XPASS strict) once the bug is fixed."""
    import pytest
    if ok:
        raise AssertionError("XPASS(strict): fixed, remove this known_bug(): " + reason)
    pytest.xfail(reason)


def lamp_duty(level: int) -> int:
    """The PWM duty a light pole drives for a level in %: the firmware's own dimming curve
    (firmware/light_pole/curve.py runs unchanged under CPython; firmware/ is on the tests' path)."""
    from light_pole.curve import duty
    return duty(level * 100)


# ------------------------------------------------------------------------------ resources
class VirtualBoardResource:
    def __init__(self, spec: BoardSpec, flash_dir: Path, gateway: tuple[str, int] | None = None) -> None:
        """gateway: the address the virtual access point connects a Wi-Fi board's TCP connection to."""
        from sim import vboard
        self.spec = spec
        kw: dict = {}
        if spec.role == "container_sensor":  # the reference wiring's trigger/echo ultrasonic sensor
            pins = roles.TEMPLATES["container_sensor"]["pins"]
            kw = {"ultrasonic": {"trig": pins["trig"], "echo": pins["echo"]}, "distance_mm": None}
        if gateway is not None:
            kw["wifi"] = dict(WIFI_AP, gateway=gateway)
        self.vb = vboard.VirtualBoard(realtime=True, flash_dir=flash_dir, name=spec.id, **kw)

    def start(self) -> None:
        self.vb.start()

    def stop(self) -> None:
        self.vb.stop()

    @property
    def console(self) -> str:
        return self.vb.console_pty

    @property
    def link_url(self) -> str:
        return self.vb.link_url


class SerialBoardResource:
    def __init__(self, spec: BoardSpec) -> None:
        self.spec = spec

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @property
    def console(self) -> str:
        return ports.resolve(None, serial_number=self.spec.usb_serial)

    @property
    def link_url(self) -> str:
        return ports.resolve(None, serial_number=self.spec.link_usb_serial)


# ------------------------------------------------------------------------------ drivers
class ConsoleDriver:
    """park-device, as a technician would run it, on the board's console port."""

    def __init__(self, res) -> None:
        self.res = res

    def _ui(self) -> UI:
        return UI(quiet=True, out=io.StringIO(), err=io.StringIO())

    def deploy(self) -> dict:
        return deploy(self._ui(), self.res.console, self.res.spec.role, timeout=15)[1]

    def provision(self, site: str, registry: str, booking_key: str | None = None, sets=(), link: str = "serial",
                  psk_file: str | None = None) -> dict:
        """As a technician would: a Wi-Fi board gets --link wifi, the network, the passphrase from a
        0600 file and the gateway's address."""
        s = self.res.spec
        radio = {} if link == "serial" else {"link": link}  # a radio keeps the UART as the wired fallback
        if link == "wifi":
            radio.update(wifi_ssid=WIFI_AP["ssid"], wifi_psk_file=psk_file, gateway=GATEWAY_ADDR)
        return provision(self._ui(), self.res.console, s.id, s.role, site, registry=registry, position=s.position,
                         booking_key=booking_key, sets=list(sets), create_registry=True, timeout=15, **radio)[1]


class PeripheralDriver:
    """Sensors and actuators of a virtual board (feature 'peripherals')."""

    def __init__(self, res: VirtualBoardResource) -> None:
        self.vb = res.vb

    def __getattr__(self, name):
        return getattr(self.vb, name)


class PowerDriver:
    def __init__(self, res, relay: dict | None) -> None:
        self.res, self.relay = res, relay

    def cycle(self, off_ms: float = 200) -> None:
        if isinstance(self.res, VirtualBoardResource):
            self.res.vb.power_cycle(off_ms)
            return
        if not self.relay or self.res.spec.relay_channel is None:
            raise BenchError(f"board {self.res.spec.id} has no power relay")
        ch = self.res.spec.relay_channel
        import time
        subprocess.run(shlex.split(self.relay["off"].format(channel=ch)), check=True)
        time.sleep(off_ms / 1000)
        subprocess.run(shlex.split(self.relay["on"].format(channel=ch)), check=True)


class LinkCable:
    """The cable between the gateway and a virtual board's link UART, which the bench can pull.

    A TCP relay in front of the board's link socket: the gateway's link URL points here.
    unplug() cuts every connection and refuses new ones (the gateway sees its port go away
    and retries); bytes the board sends meanwhile are lost on the wire, as with a pulled
    USB cable. plug() lets the gateway's next reconnect through."""

    def __init__(self, target_url: str) -> None:
        host, port = target_url.split("://", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.url = "socket://127.0.0.1:%d" % self.srv.getsockname()[1]
        self.plugged = True
        self.connects = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="cable-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            if not self.plugged:
                a.close()
                continue
            try:
                b = socket.create_connection(self.target, timeout=5)
            except OSError:
                a.close()
                continue
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self._lock:
                self._pairs.append((a, b))
                self.connects += 1
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                d = src.recv(4096)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def unplug(self) -> None:
        self.plugged = False
        self._cut()

    def plug(self) -> None:
        self.plugged = True

    def close(self) -> None:
        self._closed = True
        self.srv.close()
        self._cut()


class ReaderDriver:
    """The locker's token reader module: presents "<comp> <base64 token>\\n" lines on the
    reader UART (firmware/locker/reader.py), which the firmware parses and decides on.

    A real bench wires a USB-UART to the reader pins (not written yet). A virtual board
    that offers host input on a non-link UART (`uart_write`) is used directly. Until
    sim/vboard has that, the bytes reach the simulated UART through the board's console
    (the real raw REPL that park-device uses): a TEST DOUBLE for the reader's wire only:
    it adds a host-fed receive buffer to the simulated `machine.UART`
    (sim/vmachine) that `any()`/`read()` serve first. The firmware's reader
    parser, token check, lock pulse and audit run unchanged."""

    _WIRE = (
        "import machine\n"
        "U = machine.UART\n"
        "if not hasattr(U, '_bench_rx'):\n"
        "    U._bench_rx = {}\n"
        "    U._hw_any = U.any\n"
        "    U._hw_read = U.read\n"
        "    def _any(self):\n"
        "        return len(U._bench_rx.get(self._id, b'')) + U._hw_any(self)\n"
        "    def _read(self, n=-1):\n"
        "        q = U._bench_rx.get(self._id, b'')\n"
        "        if not q:\n"
        "            return U._hw_read(self, n)\n"
        "        k = len(q) if n is None or n < 0 else min(n, len(q))\n"
        "        U._bench_rx[self._id] = q[k:]\n"
        "        return q[:k]\n"
        "    U.any = _any\n"
        "    U.read = _read\n"
    )

    def __init__(self, res, uart: int) -> None:
        self.res, self.uart = res, uart

    def present(self, comp: int, raw: bytes) -> None:
        import binascii
        line = b"%d " % comp + binascii.b2a_base64(raw).strip() + b"\n"
        vb = getattr(self.res, "vb", None)
        if vb is None:
            raise BenchError(f"board {self.res.spec.id}: no reader wiring on this bench")
        if hasattr(vb, "uart_write"):
            vb.uart_write(self.uart, line)
            return
        from park_device.board import Board
        with Board.open(self.res.console, timeout=10, soft_reset=False) as b:
            b.exec(self._WIRE + "U._bench_rx[%d] = U._bench_rx.get(%d, b'') + %r\n" % (self.uart, self.uart, line))


class LockerAudit:
    """The locker's audit ring as the firmware left it in flash (/state/locker/audit.bin):
    what the device itself recorded and which records the gateway acknowledged.

    Format (firmware/locker/audit.py): 26-byte records, little endian seq u32, t u32,
    kind u8, comp u8, a u8, flags u8, v i32, eid u64, then CRC-16 (big endian) over 24 bytes."""

    PATH = "state/locker/audit.bin"
    KINDS = {1: "access", 2: "door", 3: "alarm", 4: "fault"}
    NO_EID = 0xFFFFFFFFFFFFFFFF

    def __init__(self, vb) -> None:
        self.vb = vb

    def records(self) -> list[dict]:
        from protocol.crc16 import crc16
        try:
            raw = self.vb.read_flash(self.PATH)
        except OSError:
            return []
        out = []
        for off in range(0, len(raw) - 25, 26):
            b = raw[off:off + 26]
            seq, t, kind, comp, a, flags, v, eid = struct.unpack_from("<IIBBBBiQ", b, 0)
            if seq == 0xFFFFFFFF or crc16(b[:24]) != (b[24] << 8) | b[25]:
                continue
            out.append({"seq": seq, "t": t, "kind": self.KINDS.get(kind, kind), "comp": comp, "a": a,
                        "acked": bool(flags & 1), "v": v, "eid": None if eid == self.NO_EID else eid})
        return sorted(out, key=lambda r: r["seq"])

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records() if r["kind"] == kind]


# ------------------------------------------------------------------------------ strategy
class BoardStrategy:
    """Bring a board to a state, doing only the missing steps (every step is idempotent)."""

    STATES = ("off", "started", "deployed", "provisioned")

    def __init__(self, res, registry: str, site: str, booking_key: str | None = None, sets=(),
                 inputs: dict | None = None, link: str = "serial", psk_file: str | None = None) -> None:
        self.res, self.registry, self.site, self.booking_key = res, registry, site, booking_key
        self.link, self.psk_file = link, psk_file
        self.sets = list(sets)
        # virtual boards, set before the firmware boots provisioned: {pin: level} or {("adc", pin): uv}
        self.inputs = dict(inputs or {})
        self.console = ConsoleDriver(res)
        self.state = "off"
        self.results: dict[str, dict] = {}

    def to(self, state: str) -> "BoardStrategy":
        want = self.STATES.index(state)
        if self.STATES.index(self.state) < 1 <= want:
            self.res.start()
            for pin, v in self.inputs.items():
                if isinstance(pin, tuple) and pin[0] == "adc":
                    self.res.vb.set_adc(pin[1], uv=v)
                elif pin == "distance_mm":
                    self.res.vb.set_distance_mm(v)
                else:
                    self.res.vb.set_pin(pin, v)
            self.state = "started"
        if self.STATES.index(self.state) < 2 <= want:
            self.results["deploy"] = self.console.deploy()
            self.state = "deployed"
        if self.STATES.index(self.state) < 3 <= want:
            self.results["provision"] = self.console.provision(self.site, self.registry, self.booking_key, self.sets,
                                                               self.link, self.psk_file)
            self.state = "provisioned"
        return self
