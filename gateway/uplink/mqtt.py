"""The MQTT side of the uplink: one aiomqtt connection that drains the outbox.

- QoS 1 with at most ``inflight`` publishes awaiting PUBACK (aiomqtt's cost
  grows with the square of pending publishes; ~100 keeps it linear).
- Rows are published in outbox order and acked (deleted) only after PUBACK.
  After a reconnect the outbox is rewound: unacknowledged rows are sent
  again (at-least-once; consumers drop duplicates by event id).
- The gateway status topic is retained: ``online`` after every connect, the
  broker publishes the ``offline`` last will if the gateway vanishes, and a
  clean stop publishes ``offline`` itself.
- Command requests arrive on ``.../cmd/req``; the answer (with the request's
  ``id`` as correlation) goes through the outbox to ``.../cmd/res``. Only
  fresh requests run: a retained one, or one whose ``ts`` is further than
  ``request_max_age_s`` from the gateway's clock, is answered ``stale``; an
  id answered before (also before a restart) gets its first answer again.
- Reconnects use exponential backoff with jitter between
  ``reconnect_min_s`` and ``reconnect_max_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import ssl
import time
from typing import Any, Awaitable, Callable, Mapping

import aiomqtt
import paho.mqtt.client as paho

from gateway import __version__

from .config import UplinkConfig
from .errors import CommandError, OutboxError
from .outbox import PRIO_STATE, Outbox
from .requests import INTERRUPTED, RequestLog
from .topics import Topics

__all__ = ["MqttLink", "tls_context"]

log = logging.getLogger("park.uplink.mqtt")

_MAX_REQUEST = 16 * 1024
_STABLE_S = 10.0  # a connection that lasted this long resets the reconnect backoff


def tls_context(config: UplinkConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.check_hostname = tls.verify_hostname
    return ctx


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _fast_puback(pc: paho.Client, pending: dict[int, int], on_publish: Callable) -> bool:
    """Take the PUBACKs of the drain's own publishes without paho's per-packet objects.

    paho decodes every PUBACK into a ReasonCode, a Properties and a named tuple
    before the callback, which was the largest single cost per message (FIELD-NOTES).
    A 2-byte PUBACK (MQTT 3.1.1, or 5 with success and no properties) for a mid
    in ``pending`` is finished here as paho would (the message leaves
    ``_out_messages`` and its info is marked published); anything else takes
    paho's own path. Returns False (nothing installed) if this paho lacks the
    internals it relies on or bounds its own in-flight window.
    """
    if not all(hasattr(pc, a) for a in ("_handle_pubackcomp", "_in_packet", "_out_messages",
                                           "_out_message_mutex", "_inflight_messages", "_max_inflight_messages")):
        return False
    if pc._max_inflight_messages:
        return False
    slow = pc._handle_pubackcomp
    out = pc._out_messages
    lock = pc._out_message_mutex
    ok = paho.MQTT_ERR_SUCCESS

    def handle(cmd: Any) -> Any:
        pkt = pc._in_packet["packet"]
        if cmd == "PUBACK" and len(pkt) == 2:
            mid = (pkt[0] << 8) | pkt[1]
            if mid in pending:
                with lock:
                    msg = out.pop(mid, None)
                    if msg is not None:
                        pc._inflight_messages -= 1
                if msg is not None:
                    msg.info._set_as_published()
                    on_publish(pc, None, mid, None, None)
                return ok
        return slow(cmd)

    pc._handle_pubackcomp = handle  # type: ignore[method-assign]
    return True


class MqttLink:
    def __init__(self, config: UplinkConfig, topics: Topics, outbox: Outbox, requests: RequestLog,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self.requests = requests
        self._clock = clock
        self.command_dispatch: Callable[[str, str | None, dict[str, Any], str], Awaitable[Mapping[str, Any] | None]] | None = None
        self.connected_event = asyncio.Event()
        self.published = 0
        self.inflight = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._stopping = False
        self._command_tasks: set[asyncio.Task[None]] = set()
        # Drain via paho's PUBACK callback; False (or an aiomqtt without a paho
        # client inside) uses ``inflight`` workers awaiting aiomqtt's publish.
        self.direct = True

    @property
    def connected(self) -> bool:
        return self.connected_event.is_set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="uplink-mqtt")

    async def stop(self) -> None:
        """Publish the retained ``offline`` status (if connected) and disconnect."""
        self._stopping = True
        client = self._client
        if client is not None and self.connected:
            try:
                await client.publish(self.topics.status, self._status("offline", "stopped"), qos=1,
                                     retain=True, timeout=2.0)
            except (aiomqtt.MqttError, asyncio.TimeoutError) as exc:
                log.info("could not publish offline status on stop: %s", exc)
        for t in list(self._command_tasks):
            t.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _status(self, state: str, reason: str | None = None) -> bytes:
        body: dict[str, Any] = {"state": state, "gateway": self.config.gateway_id, "sites": list(self.config.sites)}
        if state == "online":
            body["ts"] = self._clock()
            body["version"] = __version__
        if reason:
            body["reason"] = reason
        return _dumps(body)

    def _client_for(self) -> aiomqtt.Client:
        c = self.config
        client = aiomqtt.Client(
            c.host, c.port,
            username=c.username, password=c.password,
            identifier=c.mqtt_client_id,
            clean_session=True,  # the outbox, not the broker session, carries undelivered data
            keepalive=c.keepalive_s,
            timeout=max(10.0, c.keepalive_s),
            will=aiomqtt.Will(self.topics.status, self._status("offline", "connection lost"), qos=1, retain=True),
            # Our own window bounds what is in flight; paho's limit (0 = none) would
            # only add a scan of all pending messages on every PUBACK.
            max_inflight_messages=0,
            tls_context=tls_context(c),
            tls_insecure=(not c.tls.verify_hostname) if c.tls.enabled else None,
            logger=log,
        )
        # The window is bounded by us; aiomqtt would warn on every publish above 10.
        client.pending_calls_threshold = c.inflight + 10
        return client

    async def _run(self) -> None:
        delay = self.config.reconnect_min_s
        first = True
        while not self._stopping:
            up_since: float | None = None
            try:
                client = self._client_for()
                async with client:
                    self._client = client
                    if not first:
                        self.reconnects += 1
                    first = False
                    up_since = time.monotonic()
                    self.last_error = None
                    await client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
                    for site in self.config.sites:
                        for topic in self.topics.command_subscriptions(site):
                            await client.subscribe(topic, qos=1)
                    self.outbox.rewind()
                    self.connected_event.set()
                    log.info("connected to %s:%d", self.config.host, self.config.port)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or exc.__class__.__name__
                log.warning("backbone connection: %s; retrying with backoff", self.last_error)
            except OutboxError as exc:
                self.last_error = str(exc)
                log.error("outbox: %s", exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not end the uplink for good
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.exception("uplink connection failed unexpectedly; reconnecting")
            finally:
                self._client = None
                self.connected_event.clear()
                self.inflight = 0
            if self._stopping:
                break
            if up_since is not None and time.monotonic() - up_since > _STABLE_S:
                delay = self.config.reconnect_min_s  # it was a good connection: retry soon
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._commands(client))
                pc = getattr(client, "_client", None)
                if self.direct and isinstance(pc, paho.Client):
                    tg.create_task(self._drain_direct(pc))
                else:
                    for _ in range(self.config.inflight):
                        tg.create_task(self._publisher(client))
        except BaseExceptionGroup as group:
            for exc in group.exceptions:
                if isinstance(exc, (aiomqtt.MqttError, OutboxError)):
                    raise exc from None
            raise

    async def _drain_direct(self, pc: paho.Client) -> None:
        """Drain the outbox through aiomqtt's paho client with paho's own PUBACK callback.

        aiomqtt's ``publish`` creates an Event per message and scans every
        pending call on each publish; at 100 in flight that halves the rate.
        Here one coroutine publishes rows in order while fewer than
        ``inflight`` await PUBACK, and the callback acks the outbox row.  The
        connection, TLS, will, subscriptions and aiomqtt's own publishes stay
        with aiomqtt (its callback still gets every mid that is not ours).
        """
        outbox = self.outbox
        window = self.config.inflight
        pending: dict[int, int] = {}  # paho mid -> outbox row id
        room = asyncio.Event()
        theirs: Any = pc.on_publish  # aiomqtt's, for the mids of its own publishes

        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            rid = pending.pop(mid, None)
            if rid is None:
                if theirs is not None:
                    theirs(client, userdata, mid, reason, props)
                return
            outbox.ack(rid)
            self.published += 1
            self.inflight = len(pending)
            room.set()

        pc.on_publish = on_publish
        fast = _fast_puback(pc, pending, on_publish)
        if not log.isEnabledFor(logging.DEBUG):
            pc.disable_logger()  # paho logs every packet at DEBUG; errors still reach aiomqtt
        try:
            while True:
                row = outbox.take_nowait()
                if row is None:
                    row = (await outbox.take(1))[0]
                while len(pending) >= window:
                    room.clear()
                    await room.wait()
                info = pc.publish(row.topic, row.payload, row.qos, row.retain)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                if info.is_published():  # QoS 0: written, nothing to wait for
                    outbox.ack(row.id)
                    self.published += 1
                    continue
                pending[info.mid] = row.id
                self.inflight = len(pending)
        finally:
            pc.on_publish = theirs
            if fast:
                del pc._handle_pubackcomp
            self.inflight = 0

    async def _publisher(self, client: aiomqtt.Client) -> None:
        """One of ``inflight`` workers; each has at most one publish awaiting PUBACK.

        Taking a row and handing it to paho happen in one step (no await in
        between), so rows go on the wire in outbox order.
        """
        outbox = self.outbox
        while True:
            row = outbox.take_nowait()
            if row is None:
                rows = await outbox.take(1)
                row = rows[0]
            self.inflight += 1
            try:
                await client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain, timeout=math.inf)
            finally:
                self.inflight -= 1
            outbox.ack(row.id)
            self.published += 1

    # -- commands ------------------------------------------------------------

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parsed = self.topics.parse_request(message.topic.value)
            if parsed is None:
                continue
            site, device_id = parsed
            response_topic = self.topics.response_for(message.topic.value)
            self._handle_request(site, device_id, message.payload, response_topic, bool(message.retain))

    def _handle_request(self, site: str, device_id: str | None, payload: Any, response_topic: str,
                        retained: bool = False) -> None:
        request, error = _parse_request(payload)
        if error is not None:
            corr = request.get("id") if isinstance(request, dict) and isinstance(request.get("id"), str) else None
            self._respond(response_topic, _dumps({"id": corr, "ok": False, "error": error}))
            return
        corr = request.pop("id")
        created = request.pop("ts")
        key = (response_topic, corr)
        answer = self.requests.get(key)
        if isinstance(answer, bytes) and answer != INTERRUPTED:
            # A redelivered request (QoS 1 duplicate, a retry, a retained copy): never run it twice,
            # but answer every delivery with the first answer.
            self._respond(response_topic, answer)
            return
        if isinstance(answer, int):
            self.requests.another_delivery(key)  # answered when the first delivery's run ends
            return
        self.requests.begin(key)
        stale = self._staleness(retained, created, answer)
        if stale is not None:
            self._answer(key, response_topic, {"id": corr, "ok": False, "error": {"code": "stale", "message": stale}})
            return
        task = asyncio.get_running_loop().create_task(
            self._run_command(site, device_id, request, corr, response_topic, key))
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    def _staleness(self, retained: bool, created: float, answer: bytes | None) -> str | None:
        """Why a request must not run, or None when it is fresh."""
        if answer == INTERRUPTED:
            return "the gateway stopped while this request ran; it is not run again"
        if retained:
            return "a retained request is never run (publish requests with retain=false)"
        age = self._clock() - created
        limit = self.config.request_max_age_s
        if abs(age) > limit:
            return (f"created {age:.0f} s ago by the gateway's clock; requests older (or newer) than "
                    f"{limit:g} s are not run")
        return None

    async def _run_command(self, site: str, device_id: str | None, command: dict[str, Any], corr: str,
                           response_topic: str, key: tuple[str, str]) -> None:
        try:
            if self.command_dispatch is None:
                raise CommandError("not_ready", "no command handler")
            result = await asyncio.wait_for(
                self.command_dispatch(site, device_id, command, corr), self.config.command_timeout_s)
            body: dict[str, Any] = {"id": corr, "ok": True, "result": dict(result or {})}
        except CommandError as exc:
            body = {"id": corr, "ok": False, "error": {"code": exc.code, "message": exc.message}}
            if exc.field:
                body["error"]["field"] = exc.field
        except asyncio.TimeoutError:
            body = {"id": corr, "ok": False,
                    "error": {"code": "timeout", "message": f"no result within {self.config.command_timeout_s} s"}}
        except Exception as exc:  # a handler bug must still produce an answer
            log.exception("command handler failed for %s", corr)
            body = {"id": corr, "ok": False, "error": {"code": "internal", "message": exc.__class__.__name__}}
        self._answer(key, response_topic, body)

    def _answer(self, key: tuple[str, str], response_topic: str, body: dict[str, Any]) -> None:
        """Store the answer for redeliveries, then publish it once per delivery so far."""
        body["ts"] = self._clock()
        try:
            answer = _dumps(body)
        except (TypeError, ValueError):
            answer = _dumps({"id": body["id"], "ok": False, "ts": body["ts"],
                             "error": {"code": "internal", "message": "result is not JSON-serialisable"}})
        for _ in range(1 + self.requests.finish(key, answer)):
            self._respond(response_topic, answer)

    def _respond(self, topic: str, payload: bytes) -> None:
        try:
            fut = self.outbox.append(topic, payload, prio=PRIO_STATE)
        except OutboxError as exc:
            log.error("cannot store command response: %s", exc)
            return
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())


def _parse_request(payload: Any) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The request object, or an error body saying what is wrong with it."""
    if not isinstance(payload, (bytes, bytearray)):
        payload = b"" if payload is None else str(payload).encode()
    if len(payload) > _MAX_REQUEST:
        return {}, {"code": "malformed", "message": f"request larger than {_MAX_REQUEST} bytes"}
    try:
        request = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, {"code": "malformed", "message": f"not JSON: {exc}"}
    if not isinstance(request, dict):
        return {}, {"code": "malformed", "message": "request must be a JSON object"}
    corr = request.get("id")
    if not isinstance(corr, str) or not 0 < len(corr) <= 128:
        return request, {"code": "malformed", "message": "id must be a string of 1-128 characters"}
    if not isinstance(request.get("type"), str):
        return request, {"code": "malformed", "message": "type must be a string naming the command"}
    ts = request.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        return request, {"code": "malformed",
                         "message": "ts must be the request's creation time in seconds since the Unix epoch"}
    return request, None
