"""Device end of the protocol session (protocol/SPEC.md, session rules 1-6).

Owns the sent-sequence counter (persisted every K), the downlink replay window
(created only by a welcome that echoes this boot's nonce), hello/resync, acked
events with retransmission, and the count of dropped frames. Authentic downlink
messages other than session control go to `handler(msg)`, which returns None
(ack) or (code, field) (nack).
"""

import json
import os

try:
    from micropython import const
except ImportError:  # CPython (type checks)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from protocol import codec, cose, framing
from protocol.codes import DOWN, E_INTERNAL, E_MALFORMED, E_UNKNOWN_TYPE, UP
from protocol.errors import ProtocolError, ReplayError, UnknownTypeError
from protocol.messages import NACK_FIELD_MAX
from protocol.replay import ReplayWindow, SeqCounter

from common import clock

_MAX_EVENTS = const(16)  # pending acked events kept; beyond this the oldest is dropped and counted
_REHELLO_AFTER = const(4)  # unanswered retransmissions after which the gateway has lost the session
_HELLO_FIRST_MS = const(1000)
_EVENT_FIRST_MS = const(2000)


class Session:
    """Built by common.start for the runtime: handler(msg) answers downlink commands,
    and hears each welcome (its result ignored). Attributes named as their arguments (hello,
    handler, cfg) and the backoff as wifi's (_due, _wait) keep the interned names few."""

    def __init__(self, kid, key, transport, store, hello, cfg, handler):
        self.kid = kid
        self._mac = cose.Mac(key)
        self._t = transport
        self._store = store
        self.hello = hello  # {"type": "hello", role, fw, caps}; nonce added per attempt
        self.handler = handler
        self.cfg = cfg  # the link config: hello_max, retry_max (s)
        self.hb_s = cfg["hb"]
        self.seq = SeqCounter(lambda: store.get("seq"), lambda n: store.put("seq", n))
        self._d = framing.Deframer()
        self.window = None
        self.nonce = None
        self.welcomed = False
        self._due = None  # the next hello's ticks, None when no hello is pending
        self._wait = _HELLO_FIRST_MS
        self.hellos = 0
        self.events = []  # type: list  # [msg, seqs, due_ms, wait_ms, durable, on_ack]
        self.dropped = 0
        self.ignored = 0
        self.events_lost = 0
        self.seen_ms = None
        self.last_nack = None
        self.after_reply = None  # a message to send right after the current ack/nack (common.ota)
        box = store.get("outbox")
        if type(box) is not list:
            box = []
        self._saved = json.dumps(box)
        for m in box:
            if type(m) is dict:
                self.events.append([m, [], 0, _EVENT_FIRST_MS, True, None])

    # -- sending --

    def send(self, msg):
        """Send one message now; returns its sequence number."""
        seq = self.seq.take()
        self._t.write(codec.pack(self._mac, UP, self.kid, seq, msg))
        return seq

    def event(self, msg, now, durable=False, on_ack=None):
        """Queue an acked event (eid is filled in on its first transmission).

        durable: kept in /state/outbox.json until acked, so a reboot loses nothing.
        on_ack(msg, nack): called once the gateway answered (nack is None for an ack).
        """
        if len(self.events) >= _MAX_EVENTS:
            self.events.pop(0)
            self.events_lost += 1
        self.events.append([msg, [], now, _EVENT_FIRST_MS, durable, on_ack])
        if durable:
            self._persist()

    def persist_events(self):
        """Make every pending event durable (before a deep sleep or a planned reboot)."""
        for e in self.events:
            e[4] = True
        self._persist()

    def _persist(self):
        out = [e[0] for e in self.events if e[4]]
        s = json.dumps(out)
        if s != self._saved:
            self._store.put("outbox", out)
            self._saved = s

    def start_hello(self, now):
        self.welcomed = False
        self.window = None
        try:
            self.nonce = os.urandom(8)
        except AttributeError:  # ports without a hardware RNG binding
            import random
            self.nonce = bytes(random.getrandbits(8) for _ in range(8))
        self._wait = _HELLO_FIRST_MS
        self._due = now

    @property
    def hello_pending(self):
        return self._due is not None

    # -- the loop --

    def poll(self, now):
        """Read and handle what arrived, send what is due; returns ms until the next deadline."""
        data = self._t.read()
        if data:
            for env, err in self._d.feed(data):
                if err is not None:
                    self.dropped += 1
                    continue
                try:
                    r = codec.open_envelope(env, DOWN, lambda kid: self._mac if kid == self.kid else None,
                                            lambda kid: self.window)
                except ProtocolError as e:
                    seq = getattr(e, "seq", None)
                    if seq is None or isinstance(e, ReplayError):
                        self.dropped += 1  # framing, forged, unknown kid, replayed: never answered
                        continue
                    if self.window is None:
                        self.ignored += 1
                        continue
                    self.seen_ms = now
                    res = (E_UNKNOWN_TYPE if isinstance(e, UnknownTypeError) else E_MALFORMED, getattr(e, "field", ""))
                else:
                    seq = r.seq
                    msg = r.msg
                    t = msg["type"]
                    if t == "welcome" or t == "resync":
                        if msg["echo"] != self.nonce:
                            self.ignored += 1
                            continue
                        self.seen_ms = now
                        if t == "resync":
                            if self.welcomed:
                                self.ignored += 1
                                continue
                            self.seq.jump(msg["floor"])
                            self.start_hello(now)
                            continue
                        if self.window is None:
                            self.window = ReplayWindow()
                            self.window.reset(seq + 1)
                        self.welcomed = True
                        self._due = None
                        if msg["hb"]:
                            self.hb_s = msg["hb"]
                        self.handler(msg)
                        continue
                    if self.window is None:
                        self.ignored += 1
                        continue
                    self.seen_ms = now
                    if t == "ack" or t == "nack":
                        nack = msg if t == "nack" else None
                        ref = msg["ref"]
                        for i in range(len(self.events)):
                            ev = self.events[i]
                            if ref in ev[1]:
                                self.events.pop(i)
                                if nack is not None:
                                    self.last_nack = nack
                                self._persist()
                                if ev[5] is not None:
                                    ev[5](ev[0], nack)
                                break
                        continue
                    try:
                        res = self.handler(msg)
                    except Exception as e:  # a handler bug must not kill the link
                        print("session: handler failed for", t, repr(e))
                        res = (E_INTERNAL, "")
                # the answer to an authentic command: ack, or nack with the field (cut to fit)
                if res is None:
                    self.send({"type": "ack", "ref": seq})
                else:
                    self.send({"type": "nack", "ref": seq, "code": res[0], "field": res[1][:NACK_FIELD_MAX]})
                if self.after_reply is not None:
                    m, self.after_reply = self.after_reply, None
                    self.send(m)
        nxt = 60000
        if self._due is not None:
            d = clock.ticks_diff(self._due, now)
            if d <= 0:
                m = dict(self.hello)
                m["nonce"] = self.nonce
                self.send(m)
                self.hellos += 1
                self._due = clock.ticks_add(now, self._wait)
                d = self._wait
                self._wait = min(d * 2, self.cfg["hello_max"] * 1000)
            nxt = min(nxt, d)
        if self.welcomed:
            for ev in self.events:
                d = clock.ticks_diff(ev[2], now)
                if d <= 0:
                    if len(ev[1]) > _REHELLO_AFTER:
                        self.start_hello(now)
                        ev[1] = []
                        return 0
                    msg = ev[0]
                    seq = self.seq.take()
                    if msg.get("eid") is None:
                        msg["eid"] = seq
                        if ev[4]:
                            self._persist()
                    self._t.write(codec.pack(self._mac, UP, self.kid, seq, msg))
                    ev[1].append(seq)
                    if len(ev[1]) > 8:
                        ev[1].pop(0)
                    d = ev[3]
                    ev[2] = clock.ticks_add(now, d)
                    ev[3] = min(d * 2, self.cfg["retry_max"] * 1000)
                nxt = min(nxt, d)
        return max(nxt, 0)
