"""HIL fixtures: the bench (--bench FILE, default benches/virtual.toml), a real Mosquitto as the
city backbone, the real gateway daemon as a subprocess, and boards brought up by park-device."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from hil_tests import bench as benchmod


def pytest_addoption(parser):
    parser.addoption("--bench", default=os.environ.get("PARK_BENCH", str(HERE / "benches" / "virtual.toml")),
                     help="bench description file (hil_tests/benches/*.toml)")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*features): the bench must have these features "
                                       "(peripherals, power, brownout, link_unplug, gateway_kill, broker_outage)")


@pytest.fixture(scope="session")
def bench(request) -> benchmod.Bench:
    return benchmod.load(request.config.getoption("--bench"))


@pytest.fixture(autouse=True)
def _needs(request, bench):
    m = request.node.get_closest_marker("needs")
    if m:
        missing = bench.missing(m.args)
        if missing:
            pytest.skip(f"bench {bench.name!r} ({bench.path.name}) lacks feature(s): {', '.join(missing)}")


# ------------------------------------------------------------------------------ backbone
@pytest.fixture
def broker(tmp_path):
    """Mosquitto with persistence, so the backbone's persistent session survives an outage."""
    from sim.broker import Mosquitto
    with Mosquitto(persistence_dir=tmp_path / "mosquitto") as b:
        yield b


class Backbone:
    """A city-side subscriber (paho-mqtt) recording every message under park/#.

    A persistent session (clean_session False, QoS 1): while the broker is down or the
    subscriber reconnects, the broker keeps its messages, as a real backbone consumer's."""

    def __init__(self, broker) -> None:
        import paho.mqtt.client as mqtt
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hil-backbone", clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("park/#", qos=1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on
        self.c.reconnect_delay_set(0.1, 1)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError("backbone subscriber: no SUBACK from the broker")

    def _on(self, c, u, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, m.payload, m.retain))

    def topic(self, t: str) -> list[bytes]:
        with self.lock:
            return [p for (tt, p, _) in self.msgs if tt == t]

    def json(self, t: str) -> list:
        return [json.loads(p) for p in self.topic(t)]

    def events(self, device: str, kind: str, site: str = "stadtpark") -> dict[str, list[dict]]:
        """Event id -> every delivery of it (at-least-once: a redelivery repeats the id)."""
        out: dict[str, list[dict]] = {}
        for e in self.json(f"park/{site}/device/{device}/event/{kind}"):
            out.setdefault(e["id"], []).append(e)
        return out

    def wait(self, pred, timeout: float = 30, what: str = "backbone message"):
        """Wait (bounded; not a timing assertion) until pred() is truthy; returns its value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        with self.lock:
            seen = sorted({t for t, _, _ in self.msgs})
        raise AssertionError(f"timed out waiting for {what}; topics seen: {seen}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def backbone(broker):
    b = Backbone(broker)
    yield b
    b.close()


# ------------------------------------------------------------------------------ gateway
class GatewayProcess:
    """`park-gateway run --config FILE` as its own process (so kill -9 is real)."""

    def __init__(self, tmp: Path, broker, site: str) -> None:
        self.tmp, self.broker, self.site = tmp, broker, site
        self.state = tmp / "gw-state"
        self.config = tmp / "gateway.toml"
        self.sock = tmp / "api.sock"
        self.links: list[str] = []
        self.wifi_port = benchmod.free_port()  # the TCP server link Wi-Fi boards connect to (kept over restarts)
        self.air = None  # hil_tests.radio.AirServer once a BLE board is on the bench: the daemon runs with it
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "gateway.log"

    @property
    def registry(self) -> str:
        return str(self.state / "registry.sqlite")

    def write_config(self, edges=(), latitude: float = 51.0, longitude: float = 10.0, hold: int = 60,
                     base: int = 10, prelight: int = 70) -> None:
        links = "".join(f'[[links]]\nname = "link{i}"\ntype = "url"\nurl = "{u}"\nreconnect_max = 0.5\n\n'
                        for i, u in enumerate(self.links))
        links += f'[[links]]\nname = "wifi"\ntype = "tcp"\nlisten = "127.0.0.1:{self.wifi_port}"\nauth_timeout = 10\n\n'
        if self.air is not None:
            links += '[[links]]\nname = "ble"\ntype = "ble"\nmax_connections = 5\n\n'
        edges_toml = "[" + ", ".join(f'["{a}", "{b}"]' for a, b in edges) + "]"
        self.config.write_text(textwrap.dedent(f"""\
            [gateway]
            state_dir = "{self.state}"
            api_socket = "{self.sock}"
            trust_clock = true

            [uplink]
            broker = "mqtt://{self.broker.host}:{self.broker.port}"
            gateway_id = "gw-hil"
            reconnect_min_s = 0.1
            reconnect_max_s = 1.0

            [sites.{self.site}]
            latitude = {latitude}
            longitude = {longitude}
            timezone = "UTC"

            [sites.{self.site}.lighting]
            hops = 2
            base = {base}
            prelight = {prelight}
            hold = {hold}
            edges = {edges_toml}
            """) + "\n" + links)

    def start(self) -> None:
        if self.sock.exists():
            self.sock.unlink()  # left by a killed daemon; its reappearance says the new one is up
        self._logf = open(self.log, "ab")
        cmd = (["-m", "hil_tests.radio", "--config", str(self.config), "--air", self.air.address]
               if self.air is not None else ["-m", "gateway.cli", "run", "--config", str(self.config)])
        self.proc = subprocess.Popen([sys.executable, *cmd],
                                     stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 20
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"gateway did not start (rc={self.proc.poll()}):\n{self.tail()}")
            time.sleep(0.05)

    def device(self, device_id: str) -> dict:
        """The daemon's view of one device (`park-gateway device ID --json`)."""
        r = subprocess.run([sys.executable, "-m", "gateway.cli", "device", device_id, "--socket", str(self.sock),
                            "--json"], capture_output=True, text=True, timeout=20)
        if r.returncode:
            raise AssertionError(f"park-gateway device {device_id}: {r.stderr or r.stdout}")
        return json.loads(r.stdout)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_logf", None):
            self._logf.close()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture
def gateway(tmp_path, broker, bench):
    g = GatewayProcess(tmp_path, broker, bench.site)
    g.state.mkdir(mode=0o700)
    yield g
    g.stop()
    if g.air is not None:
        g.air.close()


# ------------------------------------------------------------------------------ boards
@pytest.fixture(scope="session", autouse=True)
def firmware_snapshot(tmp_path_factory):
    """The firmware as it was when the session started (park-device honours $PARK_FIRMWARE_DIR):
    every board of a run gets the same files even while firmware/ is being edited."""
    snap = tmp_path_factory.mktemp("firmware") / "firmware"
    shutil.copytree(ROOT / "firmware", snap, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    old = os.environ.get("PARK_FIRMWARE_DIR")
    os.environ["PARK_FIRMWARE_DIR"] = str(snap)
    yield snap
    if old is None:
        os.environ.pop("PARK_FIRMWARE_DIR", None)
    else:
        os.environ["PARK_FIRMWARE_DIR"] = old


@pytest.fixture(scope="session")
def role_flash(tmp_path_factory, firmware_snapshot):
    """One deployed flash image per role (deploy is the slow step); boards start from a copy and
    deploy again, which then only verifies (every file unchanged)."""
    cache: dict[str, Path] = {}

    def get(role: str) -> Path:
        if role not in cache:
            from sim import vboard
            from park_device.deploy import deploy
            from park_device.ui import UI
            import io
            d = tmp_path_factory.mktemp(f"flash-{role}")
            b = vboard.VirtualBoard(realtime=True, flash_dir=d, name=f"tmpl-{role}").start()
            try:
                deploy(UI(quiet=True, out=io.StringIO(), err=io.StringIO()), b.console_pty, role, timeout=15)
            finally:
                b.stop()
            cache[role] = d
        return cache[role]
    return get


# Every bench board retries hellos and events at most every 4 s (field default: 300 s and 60 s), so a
# board that booted before the gateway, or a recovery after a fault, is seen within seconds.
BENCH_LINK = ["link.hello_max=4", "link.retry_max=4"]


@pytest.fixture
def boards(bench, gateway, role_flash, tmp_path):
    """boards(*ids) -> {id: BoardStrategy} provisioned into the gateway's registry, links configured."""
    made: list = []

    def bring_up(*ids: str, state: str = "provisioned", sets=(), cable: bool = False, inputs=None):
        """cable=True puts a pullable LinkCable between the gateway and each board's link UART (the
        board then talks over its UART, whatever its bench link); inputs={pin: level} are set on
        virtual boards before they boot provisioned. Wi-Fi boards (the bench's `link`) reach the
        gateway's TCP server link through the virtual access point, BLE boards its BLE pool through
        the bench's air (hil_tests/radio.py)."""
        out = {}
        for i in ids:
            spec = bench.board(i)
            link = "serial" if cable else spec.link
            if spec.kind == "virtual":
                flash = tmp_path / f"flash-{i}"
                shutil.copytree(role_flash(spec.role), flash)
                gw = ("127.0.0.1", gateway.wifi_port) if link == "wifi" else None
                res = benchmod.VirtualBoardResource(spec, flash, gw)
            else:
                res = benchmod.SerialBoardResource(spec)
            bk = str(tmp_path / "booking.key") if spec.role == "locker" else None
            st = benchmod.BoardStrategy(res, gateway.registry, bench.site, bk, BENCH_LINK + list(sets),
                                        inputs if spec.kind == "virtual" else None, link, psk_file()).to(state)
            made.append(st)
            if link == "wifi":
                pass  # the board connects to the gateway's TCP server link
            elif link == "ble":  # the board's radio on the air the daemon's fake radio reaches
                if gateway.air is None:
                    from hil_tests.radio import AirServer
                    gateway.air = AirServer()
                gateway.air.add(res.vb)
            elif cable:
                if spec.kind != "virtual":
                    raise benchmod.BenchError(f"{bench.path}: board {i}: pulling a real link cable needs a "
                                              "switchable USB hub, which the bench does not drive yet")
                st.cable = benchmod.LinkCable(res.link_url)
                cables.append(st.cable)
                gateway.links.append(st.cable.url)
            else:
                gateway.links.append(res.link_url)
            out[i] = st
        return out
    def psk_file() -> str:
        f = tmp_path / "wifi.psk"
        if not f.exists():
            f.write_text(benchmod.WIFI_AP["psk"] + "\n")
            f.chmod(0o600)
        return str(f)

    cables: list = []
    yield bring_up
    for c in cables:
        c.close()
    for st in made:
        st.res.stop()
