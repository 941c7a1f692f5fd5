"""Local control API: JSON lines over a Unix socket, guarded by file permissions alone.

The socket is created 0600 (owner only) or, with `api_group`, 0660 for that
group; its directory is 0750. No token or shared secret exists: whoever may
open the socket is an operator. One request per line:

    {"op": "status"} | {"op": "devices"} | {"op": "device", "id": "l001"}
    {"op": "command", "id": "l001", "command": {"type": "light_set", "level": 80},
     "timeout": 30, "queue_for": 0}
    {"op": "cancel", "id": "k001", "command": "COMMAND_ID"}   (ids in the device's "commands")
    {"op": "pickups"} | {"op": "reload"} | {"op": "tail", "id": "l001"}   (tail streams until closed)
    {"op": "update", "action": "status"|"plan"|"halt"|"resume"|"abort", ...}   (gateway/update)

Each answer is one line {"ok": true, "result": ...} or {"ok": false, "error":
{"code": ..., "message": ...}}; `tail` answers with one line per event.

A command lives only as long as its asker waits for it: it is cancelled (and
never sent later) when `timeout` seconds pass without the device's answer or
when the client closes its connection first. `queue_for` makes waiting for an
offline device explicit: the command then stays queued for that long even
after `timeout` (the answer says `queued`) or after the client went away.
"""

from __future__ import annotations

import asyncio
import collections
import grp
import json
import logging
import math
import os
import stat
import time

from protocol.errors import ProtocolError, SchemaError

log = logging.getLogger("park.api")

MAX_LINE = 64 * 1024
COMMAND_TIMEOUT_S = 30.0  # when the client names none
MAX_TIMEOUT_S = 24 * 3600.0
MAX_QUEUE_FOR_S = 7 * 24 * 3600.0


class _ClientGone(Exception):
    """The client closed its connection while its request ran."""


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
        self._queued: set[asyncio.Task] = set()  # commands that wait for a device with queue_for
        self.outcomes: collections.Counter = collections.Counter()  # command results, for /metrics

    async def start(self) -> None:
        gid = grp.getgrnam(self.group).gr_gid if self.group else -1  # KeyError before anything is created
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, mode=0o750, exist_ok=True)
        if gid >= 0:
            _open_to_group(d, gid)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket from a killed daemon
        old = os.umask(0o177 if not self.group else 0o117)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=MAX_LINE)
        finally:
            os.umask(old)
        try:
            if gid >= 0:
                os.chown(self.path, -1, gid)
                os.chmod(self.path, 0o660)
            else:
                os.chmod(self.path, 0o600)
        except OSError:
            self._server.close()
            os.unlink(self.path)
            raise

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients) + list(self._queued):
                t.cancel()
            await asyncio.gather(*self._clients, *self._queued, return_exceptions=True)
            await self._server.wait_closed()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        lines = _Lines(reader)
        try:
            while True:
                try:
                    line = await lines.next()
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
                    if req["op"] == "command":
                        result = await self._command(req, lines)
                    else:
                        result = await self.dispatch(req)
                    writer.write(_json({"ok": True, "result": result}))
                except json.JSONDecodeError as e:
                    writer.write(_json({"ok": False, "error": {"code": "bad_request", "message": "not JSON: %s" % e}}))
                except ApiError as e:
                    writer.write(_json({"ok": False, "error": {"code": e.code, "message": e.message}}))
                except (ConnectionError, asyncio.CancelledError, _ClientGone):
                    raise
                except Exception as e:  # noqa: BLE001 - a bug answers this request, it does not end the daemon
                    log.exception("api request %r failed", line[:200])
                    writer.write(_json({"ok": False, "error": {"code": "internal", "message": str(e)}}))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, _ClientGone):
            pass
        finally:
            lines.close()
            self._clients.discard(task)
            writer.close()

    async def _command(self, req: dict, lines: "_Lines"):
        """A device command bounded by the request's timeout and by the client's connection."""
        device_id = _need(req, "id")
        cmd = req.get("command")
        if not isinstance(cmd, dict):
            raise ApiError("bad_request", "\"command\" must be an object with a \"type\"")
        timeout = _seconds(req, "timeout", COMMAND_TIMEOUT_S, MAX_TIMEOUT_S)
        queue_for = _seconds(req, "queue_for", 0.0, MAX_QUEUE_FOR_S)
        deadline = time.time() + max(timeout, queue_for)  # Daemon.command takes wall-clock deadlines
        kw = {"deadline": deadline, "queue_for": queue_for} if queue_for else {"deadline": deadline}
        task = asyncio.ensure_future(
            asyncio.wait_for(self.dispatch({"op": "command", "id": device_id, "command": cmd}, **kw),
                             max(timeout, queue_for)))
        what = "%s to %s" % (cmd.get("type"), device_id)
        if cmd.get("type") == "unlock":
            what += " (compartment %s, reason %r)" % (cmd.get("comp"), cmd.get("reason"))
        try:
            done = await lines.until_gone_or(task, timeout)
        except _ClientGone:
            if queue_for:
                self._keep_queued(task, what)
            else:
                task.cancel()
                log.info("api: %s cancelled: the client went away", what)
            raise
        if done:
            try:
                result = task.result()
                self.outcomes["ok"] += 1
                log.info("api: %s: %s", what, (result or {}).get("result", "done") if isinstance(result, dict) else "done")
                return result
            except ApiError as e:
                self.outcomes[e.code] += 1
                log.info("api: %s refused: %s: %s", what, e.code, e.message)
                raise
            except asyncio.TimeoutError:
                raise ApiError("timeout", "%s: no answer within %g s; the command was cancelled and will "
                               "not be carried out" % (what, max(timeout, queue_for))) from None
        if queue_for:
            self._keep_queued(task, what)
            return {"device": device_id, "command": cmd.get("type"), "result": "queued", "queued_for_s": queue_for}
        task.cancel()
        raise ApiError("timeout", "%s: no answer within %g s; the command was cancelled and will not be "
                       "carried out" % (what, timeout))

    def _keep_queued(self, task: asyncio.Task, what: str) -> None:
        self._queued.add(task)
        task.add_done_callback(self._queued.discard)
        task.add_done_callback(lambda t: _log_queued(t, what))

    async def dispatch(self, req: dict, **command_kw):
        """Answer one request; `command_kw` (deadline, queue_for) go to Daemon.command."""
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
                site = req.get("site")
                if site is not None and site not in d.cfg.sites:
                    raise ApiError("unknown_site", "no site %r (sites: %s)" % (site, ", ".join(sorted(d.cfg.sites))))
                return d.pickups(site)
            if op == "reload":
                return d.reload()
            if op == "cancel":
                device_id, command_id = _need(req, "id"), _need(req, "command")
                d.device(device_id)  # LookupError: unknown_device
                try:
                    return d.cancel(device_id, command_id)
                except LookupError as e:
                    raise ApiError("unknown_command", str(e.args[0] if e.args else e)) from None
            if op == "update":
                from gateway.update import UpdateError
                try:
                    return await d.update(req)
                except UpdateError as e:
                    raise ApiError(e.code, e.message) from None
            if op == "command":
                cmd = req.get("command")
                if not isinstance(cmd, dict):
                    raise ApiError("bad_request", "\"command\" must be an object with a \"type\"")
                return await d.command(_need(req, "id"), cmd, **command_kw)
        except CommandFailed as e:
            raise ApiError(e.code, _refusal(e)) from None
        except LookupError as e:
            raise ApiError("unknown_device", _known(str(e.args[0] if e.args else e), d)) from None
        except SchemaError as e:
            raise ApiError("bad_value", e.detail) from None
        except (ValueError, ProtocolError) as e:
            raise ApiError("bad_request", getattr(e, "detail", None) or str(e)) from None
        raise ApiError("unknown_op", "unknown op %r (status, devices, device, command, cancel, pickups, reload, tail, update)"
                       % op)

    async def _tail(self, writer: asyncio.StreamWriter, req: dict) -> None:
        q: asyncio.Queue = asyncio.Queue(maxsize=1000)
        only = req.get("id")
        dropped = 0
        if only is not None:
            try:
                self.daemon.device(only)
            except LookupError as e:
                raise ApiError("unknown_device", str(e.args[0] if e.args else e)) from None

        def listen(ev: dict) -> None:
            nonlocal dropped
            if only and ev.get("device") != only:
                return
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                dropped += 1  # a slow terminal must not slow the gateway

        unsubscribe = self.daemon.subscribe(listen)
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
            unsubscribe()


_REFUSALS = {
    "bad_value": "the device refused a value",
    "not_supported": "the device does not support this command",
    "denied": "the device denied the command",
    "busy": "the device is busy",
    "not_ready": "the device is not ready (starting or in safe mode)",
    "malformed": "the device could not read the command",
    "unknown_type": "the device does not know this command",
    "internal": "the device failed to carry it out",
}


def _refusal(e) -> str:
    """A command failure as a sentence, the code not repeated (the answer carries it)."""
    text = e.detail or _REFUSALS.get(e.code, e.code.replace("_", " "))
    if e.field:
        text += " (field %s%s)" % (e.field, ": not a setting of this device or out of its range"
                                   if e.code == "bad_value" and not e.detail else "")
    return text


def _known(message: str, daemon, most: int = 20) -> str:
    """An unknown-device message that lists the valid ids (the first `most`)."""
    ids = sorted(daemon.sessions.devices) if daemon.sessions is not None else []
    more = " and %d more" % (len(ids) - most) if len(ids) > most else ""
    return "%s (devices: %s%s)" % (message, ", ".join(ids[:most]) or "none registered", more)


def _open_to_group(d: str, gid: int) -> None:
    """Let `api_group` enter the socket's directory when it is the daemon's own (systemd's RuntimeDirectory=).

    systemd creates /run/park-gateway 0750 owned by the service's user and group;
    operators in api_group could not reach the socket inside. A directory the
    daemon does not own, or one others may write (/tmp), is left alone.
    """
    st = os.stat(d)
    if st.st_uid != os.geteuid() or st.st_mode & 0o002:
        return
    if st.st_gid != gid:
        os.chown(d, -1, gid)
    if stat.S_IMODE(st.st_mode) & 0o050 != 0o050:
        os.chmod(d, stat.S_IMODE(st.st_mode) | 0o050)


class _Lines:
    """The request lines of one client, read ahead while a command runs so a closed connection is seen."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.ahead: collections.deque[bytes] = collections.deque()
        self.reading: asyncio.Task | None = None

    async def next(self) -> bytes:
        if self.ahead:
            return self.ahead.popleft()
        if self.reading is None:
            return await self.reader.readline()
        t, self.reading = self.reading, None
        return await t

    async def until_gone_or(self, task: asyncio.Future, timeout: float) -> bool:
        """Wait for `task` (True), `timeout` (False), or raise _ClientGone when the client closes."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            if self.reading is None:
                self.reading = asyncio.ensure_future(self.reader.readline())
            left = end - loop.time()
            if left <= 0:
                return task.done()
            done, _ = await asyncio.wait({task, self.reading}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if self.reading in done:
                t, self.reading = self.reading, None
                try:
                    line = t.result()
                except (ValueError, ConnectionError, asyncio.LimitOverrunError):
                    line = b""
                if not line:
                    raise _ClientGone()
                self.ahead.append(line)  # a pipelined request, answered after this one
            if task in done:
                return True

    def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()


def _log_queued(t: asyncio.Task, what: str) -> None:
    if t.cancelled():
        return
    e = t.exception()
    if e is None:
        log.info("api: queued %s carried out", what)
    elif isinstance(e, asyncio.TimeoutError):
        log.info("api: queued %s dropped: the device did not answer in its queue time", what)
    else:
        log.info("api: queued %s failed: %s", what, e)


def _seconds(req: dict, key: str, default: float, hi: float) -> float:
    v = req.get(key, default)
    lo = 0.001 if default else 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ApiError("bad_request", "%r must be seconds from %g to %g, got %r" % (key, lo, hi, v))
    return float(v)


def _need(req: dict, key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v:
        raise ApiError("bad_request", "%r is required" % key)
    return v


async def request(path: str, req: dict, timeout: float = 30.0):
    """One request to the daemon, all of it within `timeout` s (asyncio.TimeoutError after that).

    Raises ApiError on a refusal, ConnectionError if no daemon listens. Closing
    the connection on a timeout cancels a command the daemon still runs.
    """
    end = asyncio.get_running_loop().time() + timeout
    async with asyncio.timeout_at(end):
        reader, writer = await asyncio.open_unix_connection(path, limit=16 * 1024 * 1024)
    try:
        writer.write(_json(req))
        async with asyncio.timeout_at(end):
            await writer.drain()
            line = await reader.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        resp = json.loads(line)
        if not resp.get("ok"):
            e = resp.get("error", {})
            raise ApiError(e.get("code", "error"), e.get("message", ""))
        return resp["result"]
    finally:
        writer.close()


async def tail(path: str, device_id: str | None = None, timeout: float = 30.0):
    """Yield events from the daemon until the connection closes; ApiError at once for an unknown device."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=16 * 1024 * 1024), timeout)
    try:
        req = {"op": "tail"}
        if device_id:
            req["id"] = device_id
        writer.write(_json(req))
        await writer.drain()
        first = json.loads(await asyncio.wait_for(reader.readline(), timeout) or b"{}")
        if not first.get("ok"):
            e = first.get("error") or {}
            raise ApiError(e.get("code", "error"), e.get("message", "the daemon refused the tail"))
        while True:
            line = await reader.readline()
            if not line:
                return
            yield json.loads(line)
    finally:
        writer.close()
