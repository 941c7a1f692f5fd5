"""The MQTT client in a process of its own (``[uplink] process = true``): the second core.

Why: under load about half of the gateway's event loop is paho (a PUBACK's
parsing and objects, a publish's packet); a thread would not run it in parallel
(the GIL), a process does.  What crosses the boundary, over the child's
stdin/stdout (length-prefixed ``marshal``; the config once, pickled)::

    gateway process (Outbox, RequestLog, commands)      uplink process (MqttLink, paho)
      ("pub", gen, [(id, topic, payload, qos, retain)])  ->
                                  <- ("up", gen)  connected; the gateway rewinds the outbox
                                  <- ("ack", [id, ...])  PUBACKs: the gateway deletes the rows
                                  <- ("down", reason)    <- ("err", last error or None)
                                  <- ("req", site, device, payload, response_topic, retained)
      ("stop",)  ->  the child publishes ``offline`` and exits

The outbox stays in the gateway process, so durability is unchanged: a device's
event is acked after the outbox commit and never waits for the backbone.  Rows
are handed over only while connected, at most ``_WINDOW`` not yet acknowledged;
a row lost with a dying child is sent again after the next ``up`` (at-least-once,
as after any reconnect).  The gateway supervises the child: a child that exits
is restarted after a backoff between ``reconnect_min_s`` and ``reconnect_max_s``
with its exit status logged; the child ignores SIGINT/SIGTERM (the gateway
stops it) and exits when its stdin closes, so it never outlives the gateway
(then without an MQTT DISCONNECT: the broker publishes the last will, as for a
killed gateway).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import marshal
import os
import pickle
import signal
import struct
import sys
import time
from typing import Any

from .config import UplinkConfig
from .errors import OutboxError
from .mqtt import MqttLink, _STABLE_S
from .outbox import Outbox, Row
from .requests import RequestLog
from .topics import Topics

__all__ = ["ProcessLink"]

log = logging.getLogger("park.uplink.process")

_LEN = struct.Struct(">I")
_MAX_MSG = 64 * 1024 * 1024
_BATCH = 500  # rows per hand-over message at most
_WINDOW = 2000  # rows handed to the child and not yet acknowledged
_STOP_S = 5.0  # for the child to publish `offline` and exit before it is killed


def _frame(obj: Any) -> bytes:
    data = marshal.dumps(obj)
    return _LEN.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader, loads=marshal.loads) -> Any:
    """The next message, or None at the end of the stream."""
    try:
        head = await reader.readexactly(4)
        (n,) = _LEN.unpack(head)
        if n > _MAX_MSG:
            raise ValueError("uplink process: message of %d bytes" % n)
        return loads(await reader.readexactly(n))
    except asyncio.IncompleteReadError:
        return None


def _pipes(proc: asyncio.subprocess.Process) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    assert proc.stdin is not None and proc.stdout is not None  # started with both as PIPE
    return proc.stdin, proc.stdout


def _exit_reason(rc: int | None) -> str:
    if rc is None:
        return "did not exit"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exited with status %d" % rc


class ProcessLink(MqttLink):
    """MqttLink's interface for the Uplink, with the MQTT client in a supervised child process.

    Commands are answered here (RequestLog, the handler, the outbox), as with MqttLink;
    ``inflight`` counts rows handed to the child and not yet acknowledged.
    """

    def __init__(self, config: UplinkConfig, topics: Topics, outbox: Outbox, requests: RequestLog,
                 **kw: Any) -> None:
        super().__init__(config, topics, outbox, requests, **kw)
        self.restarts = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._outstanding = 0
        self._room = asyncio.Event()
        self._ups = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="uplink-process")

    async def stop(self) -> None:
        """Ask the child to publish ``offline`` and exit; kill it after a bound."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                stdin = _pipes(proc)[0]
                stdin.write(_frame(("stop",)))
                stdin.close()
            except (ConnectionError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(proc.wait(), _STOP_S)
            except asyncio.TimeoutError:
                log.warning("uplink process %d did not stop within %.0f s; killing it", proc.pid, _STOP_S)
                proc.kill()
                await proc.wait()
        for t in list(self._command_tasks):
            t.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _supervise(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._stopping:
            started = time.monotonic()
            rc: int | None = None
            try:
                rc = await self._run_child()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the uplink for good
                self.last_error = "%s: %s" % (exc.__class__.__name__, exc)
                log.exception("uplink process: supervision failed; restarting it")
                await self._kill()
            finally:
                self._proc = None
                self.pid = None
                self.connected_event.clear()
                self.inflight = self._outstanding = 0
            if self._stopping:
                break
            if time.monotonic() - started > _STABLE_S:
                delay = self.config.reconnect_min_s
            self.restarts += 1
            self.last_error = "uplink process %s" % _exit_reason(rc)
            log.error("%s; restarting it in %.1f s (restart %d)", self.last_error, delay, self.restarts)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def _run_child(self) -> int | None:
        proc = self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.uplink._child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.pid = proc.pid
        stdin, stdout = _pipes(proc)
        root = logging.getLogger()
        fmt = root.handlers[0].formatter._fmt if root.handlers and root.handlers[0].formatter else None
        init = pickle.dumps({"config": self.config, "level": logging.getLogger("park").getEffectiveLevel(),
                             "format": fmt})
        stdin.write(_LEN.pack(len(init)) + init)
        log.info("uplink process %d started", proc.pid)
        feeder: asyncio.Task[None] | None = None
        try:
            while True:
                msg = await _read(stdout)
                if msg is None:
                    break
                kind = msg[0]
                if kind == "ack":
                    ids = msg[1]
                    ack = self.outbox.ack
                    for rid in ids:
                        ack(rid)
                    self.published += len(ids)
                    self._outstanding = max(0, self._outstanding - len(ids))
                    self.inflight = self._outstanding
                    self._room.set()
                elif kind == "up":
                    if feeder is not None:
                        feeder.cancel()
                    if self._ups:
                        self.reconnects += 1
                    self._ups += 1
                    self.outbox.rewind()
                    self._outstanding = self.inflight = 0
                    self.last_error = None
                    self.connected_event.set()
                    feeder = asyncio.get_running_loop().create_task(self._feed(proc, msg[1]), name="uplink-feed")
                elif kind == "down":
                    self.connected_event.clear()
                    self.last_error = msg[1]
                    self._outstanding = self.inflight = 0  # resent after the next "up"
                    if feeder is not None:
                        feeder.cancel()
                        feeder = None
                elif kind == "err":
                    self.last_error = msg[1]
                elif kind == "req":
                    self._handle_request(*msg[1:])
        finally:
            if feeder is not None:
                feeder.cancel()
        try:
            return await asyncio.wait_for(proc.wait(), _STOP_S)
        except asyncio.TimeoutError:
            await self._kill()
            return proc.returncode

    async def _feed(self, proc: asyncio.subprocess.Process, gen: int) -> None:
        """Hand committed rows to the child in order, at most _WINDOW unacknowledged."""
        outbox = self.outbox
        w = _pipes(proc)[0]
        try:
            while True:
                while self._outstanding >= _WINDOW:
                    self._room.clear()
                    await self._room.wait()
                rows = await outbox.take(min(_BATCH, _WINDOW - self._outstanding))
                w.write(_frame(("pub", gen, [tuple(r) for r in rows])))
                self._outstanding += len(rows)
                self.inflight = self._outstanding
                await w.drain()
        except (ConnectionError, OutboxError) as exc:
            log.info("uplink process: hand-over ended: %s", exc)  # the child is gone or the outbox closed


# -- the child ------------------------------------------------------------------


class _Feed:
    """The child's stand-in for the Outbox that MqttLink drains: rows from the gateway, acks back to it."""

    def __init__(self, send) -> None:
        self._send = send
        self._rows: collections.deque[Row] = collections.deque()
        self._wake = asyncio.Event()
        self._acks: list[int] = []
        self.gen = 0

    def put(self, gen: int, rows: list) -> None:
        if gen != self.gen:
            return  # handed over before the last reconnect: the gateway rewound and sends them again
        self._rows.extend(map(Row._make, rows))
        self._wake.set()

    def take_nowait(self) -> Row | None:
        rows = self._rows
        return rows.popleft() if rows else None

    async def take(self, limit: int) -> list[Row]:
        while not self._rows:
            self._wake.clear()
            await self._wake.wait()
        rows = self._rows
        return [rows.popleft() for _ in range(min(limit, len(rows)))]

    def ack(self, row_id: int) -> None:
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._flush)  # one message per read of PUBACKs
        self._acks.append(row_id)

    def _flush(self) -> None:
        acks, self._acks = self._acks, []
        if acks:
            self._send(("ack", acks))

    def rewind(self) -> None:
        """MqttLink calls this on every connect: drop what is here, the gateway sends from its oldest row."""
        self._flush()
        self.gen += 1
        self._rows.clear()
        self._send(("up", self.gen))


class _ChildLink(MqttLink):
    """MqttLink in the child: requests go to the gateway, which answers them through the outbox."""

    def __init__(self, config: UplinkConfig, feed: _Feed, send) -> None:
        self._send = send
        self._error: str | None = None
        super().__init__(config, Topics(config.topic_prefix, config.gateway_id), feed, None)  # type: ignore[arg-type]

    @property
    def last_error(self) -> str | None:
        return self._error

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        """Each change reaches the gateway's status (a refused password, a certificate that fails)."""
        if value != self._error:
            self._error = value
            self._send(("err", value))

    def _handle_request(self, site, device_id, payload, response_topic, retained=False) -> None:
        if not isinstance(payload, (bytes, bytearray)):
            payload = b"" if payload is None else str(payload).encode()
        self._send(("req", site, device_id, bytes(payload), response_topic, bool(retained)))

    async def _serve(self, client) -> None:
        try:
            await super()._serve(client)
        except Exception as exc:
            self._send(("down", str(exc) or exc.__class__.__name__))
            raise


async def _child() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_MSG)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
    init = await _read(reader, pickle.loads)  # from the gateway that started this process, over its pipe
    if init is None:
        return
    logging.basicConfig(level=init["level"], stream=sys.stderr,
                        format=init["format"] or "%(levelname)s %(name)s: %(message)s")

    def send(obj: Any) -> None:
        if not out.is_closing():
            out.write(_frame(obj))

    feed = _Feed(send)
    link = _ChildLink(init["config"], feed, send)
    link.start()
    gc.collect()
    gc.freeze()  # as the gateway does once it is up (gateway/daemon.py): no full collection over start-up's objects
    while True:
        msg = await _read(reader)
        if msg is None:
            # The gateway is gone without a word (killed): vanish as it did, without an MQTT DISCONNECT,
            # so the broker publishes the gateway's last will ("connection lost").
            logging.getLogger("park.uplink.process").error("the gateway's pipe closed; exiting")
            os._exit(1)
        if msg[0] == "stop":
            break
        if msg[0] == "pub":
            feed.put(msg[1], msg[2])
    await link.stop()
    out.close()


def main() -> None:
    # The gateway stops this process (stdin: "stop", or closed); a Ctrl-C or a SIGTERM to the whole
    # group must not end it before it published `offline` for the gateway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(_child())


