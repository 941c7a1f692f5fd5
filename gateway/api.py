"""Local control API: JSON lines over a Unix socket, guarded by file permissions alone.

The socket is created 0600 (owner only) or, with `api_group`, 0660 for that
group; its directory is 0750. No token or shared secret exists: whoever may
open the socket is an operator. One request per line:

    {"op": "status"} | {"op": "devices"} | {"op": "device", "id": "l001"}
    {"op": "command", "id": "l001", "command": {"type": "light_set", "level": 80}}
    {"op": "pickups"} | {"op": "reload"} | {"op": "tail"}   (tail streams until closed)

Each answer is one line {"ok": true, "result": ...} or {"ok": false, "error":
{"code": ..., "message": ...}}; `tail` answers with one line per event.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os

from protocol.errors import ProtocolError

log = logging.getLogger("park.api")

MAX_LINE = 64 * 1024


class ApiError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _json(obj) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=_default) + "\n").encode()


def _default(o):
    if isinstance(o, (bytes, bytearray)):
        return o.hex()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


class ApiServer:
    def __init__(self, path: str, daemon, group: str = ""):
        self.path = path
        self.daemon = daemon
        self.group = group
        self._server = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, mode=0o750, exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket from a killed daemon
        old = os.umask(0o177 if not self.group else 0o117)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=MAX_LINE)
        finally:
            os.umask(old)
        if self.group:
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_json({"ok": False, "error": {"code": "bad_request", "message": "line too long"}}))
                    break
                if not line:
                    break
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                        raise ApiError("bad_request", "a request is a JSON object with a string \"op\"")
                    if req["op"] == "tail":
                        await self._tail(writer, req)
                        break
                    result = await self.dispatch(req)
                    writer.write(_json({"ok": True, "result": result}))
                except json.JSONDecodeError as e:
                    writer.write(_json({"ok": False, "error": {"code": "bad_request", "message": "not JSON: %s" % e}}))
                except ApiError as e:
                    writer.write(_json({"ok": False, "error": {"code": e.code, "message": e.message}}))
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception as e:  # noqa: BLE001 - a bug answers this request, it does not end the daemon
                    log.exception("api request %r failed", line[:200])
                    writer.write(_json({"ok": False, "error": {"code": "internal", "message": str(e)}}))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def dispatch(self, req: dict):
        from gateway.session import CommandFailed

        d = self.daemon
        op = req["op"]
        try:
            if op == "status":
                return d.status()
            if op == "devices":
                return d.devices()
            if op == "device":
                return d.device(_need(req, "id"))
            if op == "pickups":
                return d.control.waste.pickups(req.get("site"))
            if op == "reload":
                return d.reload()
            if op == "command":
                cmd = req.get("command")
                if not isinstance(cmd, dict):
                    raise ApiError("bad_request", "\"command\" must be an object with a \"type\"")
                return await d.command(_need(req, "id"), cmd)
        except CommandFailed as e:
            raise ApiError(e.code, str(e) + (" (field %s)" % e.field if e.field else "")) from None
        except LookupError as e:
            raise ApiError("unknown_device", str(e.args[0] if e.args else e)) from None
        except (ValueError, ProtocolError) as e:
            raise ApiError("bad_request", str(e)) from None
        raise ApiError("unknown_op", "unknown op %r (status, devices, device, command, pickups, reload, tail)" % op)

    async def _tail(self, writer: asyncio.StreamWriter, req: dict) -> None:
        q: asyncio.Queue = asyncio.Queue(maxsize=1000)
        only = req.get("id")
        dropped = 0

        def listen(ev: dict) -> None:
            nonlocal dropped
            if only and ev.get("device") != only:
                return
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                dropped += 1  # a slow terminal must not slow the gateway

        sessions = self.daemon.sessions
        sessions.listeners.append(listen)
        try:
            writer.write(_json({"ok": True, "result": "tailing"}))
            while True:
                ev = await q.get()
                if dropped:
                    ev = dict(ev, skipped=dropped)
                    dropped = 0
                writer.write(_json(ev))
                await writer.drain()
        finally:
            sessions.listeners.remove(listen)


def _need(req: dict, key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v:
        raise ApiError("bad_request", "%r is required" % key)
    return v


async def request(path: str, req: dict, timeout: float = 30.0):
    """One request to the daemon; raises ApiError on a refusal, ConnectionError if no daemon listens."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=16 * 1024 * 1024), 5)
    try:
        writer.write(_json(req))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("the daemon closed the connection")
        resp = json.loads(line)
        if not resp.get("ok"):
            e = resp.get("error", {})
            raise ApiError(e.get("code", "error"), e.get("message", ""))
        return resp["result"]
    finally:
        writer.close()


async def tail(path: str, device_id: str | None = None):
    """Yield events from the daemon until the connection closes."""
    reader, writer = await asyncio.open_unix_connection(path, limit=16 * 1024 * 1024)
    try:
        req = {"op": "tail"}
        if device_id:
            req["id"] = device_id
        writer.write(_json(req))
        await writer.drain()
        first = json.loads(await reader.readline() or b"{}")
        if not first.get("ok"):
            raise ApiError("error", str(first))
        while True:
            line = await reader.readline()
            if not line:
                return
            yield json.loads(line)
    finally:
        writer.close()
