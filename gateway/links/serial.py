"""Serial links through pyserial.

SerialLink: a device path (use /dev/serial/by-id/... so a replugged board keeps
its name); read with an asyncio reader on the file descriptor, no thread. When
the board is unplugged the read fails (EIO/hang-up); the link closes the port
and reopens it with backoff as soon as the path is back, no restart needed.

UrlLink: any other pyserial URL (rfc2217://, loop://, spy://...) through
serial_for_url, read by one thread because those transports have no pollable fd.
"""

from __future__ import annotations

import asyncio
import os
import threading

import serial

from gateway.links.base import Link


class SerialLink(Link):
    kind = "serial"

    def __init__(self, name, port, on_envelope, on_error, baudrate=115200, reconnect_max=2.0):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        self.port = port
        self.baudrate = baudrate
        self._fd: int | None = None
        self._out = bytearray()
        self._lost: asyncio.Future | None = None

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0, exclusive=True)
        fd = ser.fileno()
        os.set_blocking(fd, False)
        self._lost = loop.create_future()
        self._fd = fd
        self._out.clear()
        loop.add_reader(fd, self._readable)
        self._up()
        if self.pressure is not None:
            self.pressure.attach(self)
        try:
            await self._lost
        finally:
            if self.pressure is not None:
                self.pressure.detach(self)
            loop.remove_reader(fd)
            loop.remove_writer(fd)
            self._fd = None
            try:
                ser.close()
            except (OSError, serial.SerialException):
                pass

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            self._lose(e)
            return
        if not data:
            self._lose(ConnectionError("port closed (hang-up)"))
            return
        self.feed(data)

    def pause_reading(self) -> None:
        """Backpressure: leave the bytes in the tty's buffer (the device's UART then waits or drops)."""
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _lose(self, err: Exception) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(err)

    def write(self, frame: bytes) -> None:
        fd = self._fd
        if fd is None:
            self.counters["tx_dropped"] += 1
            return
        self.counters["tx_frames"] += 1
        if self._out:
            self._out += frame
            return
        try:
            n = os.write(fd, frame)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._lose(e)
            return
        if n < len(frame):
            self._out += frame[n:]
            asyncio.get_running_loop().add_writer(fd, self._writable)

    def _writable(self) -> None:
        try:
            n = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError as e:
            self._lose(e)
            return
        del self._out[:n]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self._fd)

    def info(self) -> dict:
        d = super().info()
        d["port"] = self.port
        return d


class UrlLink(Link):
    """A pyserial URL without a pollable descriptor: one reader thread hands bytes to the loop."""

    kind = "url"

    def __init__(self, name, url, on_envelope, on_error, baudrate=115200, reconnect_max=30.0):
        super().__init__(name, on_envelope, on_error, reconnect_max)
        self.url = url
        self.baudrate = baudrate
        self._ser = None
        self._may_read = threading.Event()

    def pause_reading(self) -> None:
        self._may_read.clear()

    def resume_reading(self) -> None:
        self._may_read.set()

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        ser = await loop.run_in_executor(None, lambda: serial.serial_for_url(self.url, self.baudrate, timeout=0.2))
        lost = loop.create_future()
        stop = threading.Event()
        may_read = self._may_read
        may_read.set()

        def reader():
            try:
                while not stop.is_set():
                    if not may_read.wait(0.2):
                        continue  # backpressure: the bytes wait in the transport
                    data = ser.read(max(1, ser.in_waiting))
                    if data:
                        loop.call_soon_threadsafe(self.feed, data)
            except Exception as e:  # noqa: BLE001 - handed to the loop, which reconnects
                loop.call_soon_threadsafe(lambda err=e: lost.done() or lost.set_exception(err))

        self._ser = ser
        th = threading.Thread(target=reader, name="link-" + self.name, daemon=True)
        th.start()
        self._up()
        if self.pressure is not None:
            self.pressure.attach(self)
        try:
            await lost
        finally:
            if self.pressure is not None:
                self.pressure.detach(self)
            stop.set()
            self._ser = None
            await loop.run_in_executor(None, th.join, 1.0)
            ser.close()

    def write(self, frame: bytes) -> None:
        ser = self._ser
        if ser is None:
            self.counters["tx_dropped"] += 1
            return
        try:
            ser.write(frame)
            self.counters["tx_frames"] += 1
        except Exception:  # noqa: BLE001 - the reader notices the loss and reconnects
            self.counters["tx_dropped"] += 1

    def info(self) -> dict:
        d = super().info()
        d["url"] = self.url
        return d
