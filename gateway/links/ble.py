"""BLE link through bleak: frames chunked over a GATT characteristic pair.

The device offers the park link service (protocol/SPEC.md section 2): the gateway writes frames to the
RX characteristic (write without response) in chunks of MTU-3 bytes and gets
the device's bytes as notifications on TX. The frame delimiter makes the
stream self-synchronising, so chunk boundaries need no header. Lost
connections are retried with backoff; the radio's own quirks (a connection
that reports connected but never notifies) are caught by the session's
liveness check, not here.
"""

from __future__ import annotations

import asyncio

from gateway.links.base import Link

SERVICE = "7061726b-0001-4c69-6e6b-000000000001"  # SPEC.md section 2: "park" "Link"
RX_CHAR = "7061726b-0001-4c69-6e6b-000000000002"  # gateway -> device (write without response)
TX_CHAR = "7061726b-0001-4c69-6e6b-000000000003"  # device -> gateway (notify)
DEFAULT_MTU = 23


def chunks(frame: bytes, mtu: int):
    n = max(1, mtu - 3)
    for i in range(0, len(frame), n):
        yield frame[i:i + n]


def _bleak_client(address, disconnected_callback):
    from bleak import BleakClient

    return BleakClient(address, disconnected_callback=disconnected_callback)


class BleLink(Link):
    kind = "ble"

    def __init__(self, name, address, on_envelope, on_error, reconnect_max=30.0, client_factory=None):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        self.address = address
        self._factory = client_factory or _bleak_client
        self._q: asyncio.Queue | None = None
        self._client = None
        self.mtu = DEFAULT_MTU

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        lost = loop.create_future()

        def gone(_client=None):
            loop.call_soon_threadsafe(lambda: lost.done() or lost.set_exception(ConnectionError("BLE disconnected")))

        client = self._factory(self.address, gone)
        await asyncio.wait_for(client.connect(), 20)
        try:
            self.mtu = getattr(client, "mtu_size", DEFAULT_MTU) or DEFAULT_MTU
            await client.start_notify(TX_CHAR, lambda _ch, data: self.feed(bytes(data)))
            self._q = asyncio.Queue(maxsize=256)
            self._client = client
            self._up()
            writer = asyncio.create_task(self._writer(client, lost))
            try:
                await lost
            finally:
                writer.cancel()
        finally:
            self._client = None
            self._q = None
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception:  # noqa: BLE001 - already gone
                pass

    async def _writer(self, client, lost) -> None:
        q = self._q
        try:
            while True:
                frame = await q.get()
                for part in chunks(frame, self.mtu):
                    await client.write_gatt_char(RX_CHAR, part, response=False)
                self.counters["tx_frames"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed write ends this connection
            if not lost.done():
                lost.set_exception(e)

    def write(self, frame: bytes) -> None:
        q = self._q
        if q is None:
            self.counters["tx_dropped"] += 1
            return
        try:
            q.put_nowait(frame)
        except asyncio.QueueFull:
            self.counters["tx_dropped"] += 1

    def info(self) -> dict:
        d = super().info()
        d.update(address=self.address, mtu=self.mtu)
        return d
