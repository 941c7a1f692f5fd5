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
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from park_device import ports
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
        boards.append(spec)
    if "peripherals" in feats and any(s.kind != "virtual" for s in boards):
        raise BenchError(f"{path}: 'peripherals' is only available with virtual boards")
    return Bench(b.get("name", path.stem), b.get("site", "stadtpark"), feats, boards, path,
                 (doc.get("power") or {}).get("relay"), b.get("firmware_image"))


def lamp_duty(level: int) -> int:
    """The PWM duty a light pole drives for a level in %: the firmware's own dimming curve
    (firmware/light_pole/curve.py runs unchanged under CPython)."""
    import importlib
    import sys
    fw = str(Path(__file__).resolve().parents[1] / "firmware")
    if fw not in sys.path:
        sys.path.append(fw)
    return importlib.import_module("light_pole.curve").duty(level * 100)


# ------------------------------------------------------------------------------ resources
class VirtualBoardResource:
    def __init__(self, spec: BoardSpec, flash_dir: Path) -> None:
        import vboard
        self.spec = spec
        self.vb = vboard.VirtualBoard(realtime=True, flash_dir=flash_dir, name=spec.id)

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

    def provision(self, site: str, registry: str, booking_key: str | None = None, sets=()) -> dict:
        s = self.res.spec
        return provision(self._ui(), self.res.console, s.id, s.role, site, registry=registry, position=s.position,
                         booking_key=booking_key, sets=list(sets), timeout=15)[1]


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


# ------------------------------------------------------------------------------ strategy
class BoardStrategy:
    """Bring a board to a state, doing only the missing steps (every step is idempotent)."""

    STATES = ("off", "started", "deployed", "provisioned")

    def __init__(self, res, registry: str, site: str, booking_key: str | None = None, sets=()) -> None:
        self.res, self.registry, self.site, self.booking_key = res, registry, site, booking_key
        self.sets = list(sets)
        self.console = ConsoleDriver(res)
        self.state = "off"
        self.results: dict[str, dict] = {}

    def to(self, state: str) -> "BoardStrategy":
        want = self.STATES.index(state)
        if self.STATES.index(self.state) < 1 <= want:
            self.res.start()
            self.state = "started"
        if self.STATES.index(self.state) < 2 <= want:
            self.results["deploy"] = self.console.deploy()
            self.state = "deployed"
        if self.STATES.index(self.state) < 3 <= want:
            self.results["provision"] = self.console.provision(self.site, self.registry, self.booking_key, self.sets)
            self.state = "provisioned"
        return self
