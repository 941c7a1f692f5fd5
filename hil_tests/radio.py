"""The virtual bench's BLE air between two processes: virtual boards in the test process, the
gateway daemon in its own (so `kill -9` stays real).

The fake BLE radio (sim.fakeble.FakeBleRadio) must live in the daemon's process, where the BLE
pool calls it; the boards' radios (sim.vboard_ble.VboardPeripheral) live where the boards are
driven. `AirServer` (test process) and `RemotePeripheral` (daemon process) carry what crosses
the air over one loopback TCP connection, as JSON lines:

    board -> gateway   {"adv": ADDR, "hex": HEX|null}   the advertisement changed
                       {"notify": ADDR, "hex": HEX}     a notification chunk
                       {"drop": ADDR}                   the board ended the connection
    gateway -> board   {"connect": ADDR, "mtu": N}      a central connected and subscribed
                       {"write": ADDR, "hex": HEX}      a write to RX
                       {"disconnect": ADDR}             the central disconnected

    python -m hil_tests.radio --config gateway.toml --air HOST:PORT   the daemon with that radio

Only the air is simulated; the pool, the firmware's BLE transport and everything above run
unchanged.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading

from sim.fakeble import FakeBlePeripheral


# ------------------------------------------------------------------------------ the test process
class _AirClient:
    """What a VboardPeripheral sees of the remote central (the FakeBleClient interface it uses)."""

    def __init__(self, air: "AirServer", periph) -> None:
        self.air, self.periph, self.address = air, periph, periph.address
        self._notify = True

    def _deliver(self, part: bytearray) -> None:
        self.air.send({"notify": self.address, "hex": bytes(part).hex()})

    def _lost(self) -> None:
        """The board ended the connection: the central hears of it; the board needs no word back."""
        if self.periph._client is self:
            self.periph._client = None
        self.air.send({"drop": self.address})


class AirServer:
    """Listens for the daemon's process; relays between it and the boards' peripherals."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.periphs: dict = {}
        self._conn: socket.socket | None = None
        self._mu = threading.Lock()
        self._adv: dict[str, bytes | None] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="air-accept", daemon=True).start()
        threading.Thread(target=self._adverts, name="air-adverts", daemon=True).start()

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.port

    def add(self, board) -> None:
        from sim.vboard_ble import VboardPeripheral
        p = VboardPeripheral(board)
        self.periphs[p.address] = p

    def send(self, msg: dict) -> None:
        with self._mu:
            c = self._conn
            if c is None:
                return
            try:
                c.sendall((json.dumps(msg) + "\n").encode())
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            for p in self.periphs.values():  # a new daemon: whatever the old one held is gone
                p.client = None
            with self._mu:
                self._conn = c
                self._adv = {}
            threading.Thread(target=self._read, args=(c,), name="air-read", daemon=True).start()

    def _adverts(self) -> None:
        while not self._stop.wait(0.02):
            for a, p in list(self.periphs.items()):
                adv = p.advertisement if p.available else None
                if self._conn is not None and self._adv.get(a, b"") != adv:
                    self._adv[a] = adv
                    self.send({"adv": a, "hex": None if adv is None else adv.hex()})

    def _read(self, c: socket.socket) -> None:
        with contextlib.suppress(OSError), c.makefile("rb") as f:
            for line in f:
                m = json.loads(line)
                if "connect" in m:
                    p = self.periphs.get(m["connect"])
                    if p is not None:
                        p.mtu = m["mtu"]
                        p.client = _AirClient(self, p)
                elif "write" in m:
                    p = self.periphs.get(m["write"])
                    if p is not None and p.client is not None:
                        p.on_write(bytes.fromhex(m["hex"]))
                elif "disconnect" in m:
                    p = self.periphs.get(m["disconnect"])
                    if p is not None:
                        p.client = None
        if self._conn is c:
            for p in self.periphs.values():
                p.client = None

    def close(self) -> None:
        self._stop.set()
        self.srv.close()
        with self._mu:
            if self._conn is not None:
                self._conn.close()


# ------------------------------------------------------------------------------ the daemon's process
class RemotePeripheral(FakeBlePeripheral):
    """A board across the air, as the fake radio sees a peripheral."""

    def __init__(self, address: str, air: "AirLink") -> None:
        super().__init__(address, mtu=247)
        self.air = air

    def connected(self, client) -> None:
        self.air.send({"connect": self.address, "mtu": client.mtu_size})

    def disconnected(self) -> None:
        self.air.send({"disconnect": self.address})


class AirLink:
    def __init__(self, radio, reader, writer) -> None:
        self.radio, self.reader, self.writer = radio, reader, writer

    def send(self, msg: dict) -> None:
        self.writer.write((json.dumps(msg) + "\n").encode())

    def periph(self, address: str) -> RemotePeripheral:
        p = self.radio.peripherals.get(address)
        if p is None:
            p = self.radio.add(RemotePeripheral(address, self))
            p.on_write = lambda data, a=address: self.send({"write": a, "hex": data.hex()})
        return p

    async def run(self) -> None:
        while line := await self.reader.readline():
            m = json.loads(line)
            if "adv" in m:
                self.periph(m["adv"]).advertisement = None if m["hex"] is None else bytes.fromhex(m["hex"])
            elif "notify" in m:
                with contextlib.suppress(ConnectionError):
                    self.periph(m["notify"]).notify(bytes.fromhex(m["hex"]))
            elif "drop" in m:
                self.periph(m["drop"]).drop()


async def serve(config: str, air: str) -> None:
    from gateway import config as config_mod
    from gateway import sdnotify
    from gateway.daemon import Daemon
    from sim.fakeble import FakeBleRadio

    cfg = config_mod.load(config)
    radio = FakeBleRadio(max_connections=5, interval_ms=30, adv_interval_ms=100)
    host, port = air.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    link = AirLink(radio, reader, writer)
    relay = asyncio.create_task(link.run())
    d = Daemon(cfg, ble_factory=radio)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, d.stop)
    try:
        async with sdnotify.Supervisor(d):
            await d.run()
    finally:
        relay.cancel()
        writer.close()


def main(argv=None) -> int:
    import logging
    ap = argparse.ArgumentParser(description="the gateway daemon with the bench's BLE air")
    ap.add_argument("--config", required=True)
    ap.add_argument("--air", required=True, help="HOST:PORT of the test process's AirServer")
    a = ap.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(a.config, a.air))
    return 0


if __name__ == "__main__":
    sys.exit(main())
