"""Device end of the protocol session (protocol/SPEC.md, session rules 1-6).

Owns the sent-sequence counter (persisted every K), the downlink replay window
(created only by a welcome that echoes this boot's nonce), hello/resync, acked
events with retransmission, and the count of dropped frames. Authentic downlink
messages other than session control go to `handler(msg)`, which returns None
(ack) or (code, field) (nack).
"""

import json
import os

from protocol import codec, cose, framing
from protocol.codes import DOWN, E_INTERNAL, E_MALFORMED, E_UNKNOWN_TYPE, UP
from protocol.errors import ProtocolError, ReplayError, UnknownTypeError
from protocol.messages import NACK_FIELD_MAX
from protocol.replay import ReplayWindow, SeqCounter

from common import clock

MAX_EVENTS = 16
"""Pending acked events kept; beyond this the oldest is dropped and counted."""
REHELLO_AFTER = 4
"""Unanswered retransmissions of an event after which the gateway is presumed to
have lost this device's session: hello again."""
HELLO_FIRST_MS = 1000
EVENT_FIRST_MS = 2000


def nonce8():
    try:
        return os.urandom(8)
    except AttributeError:  # ports without a hardware RNG binding
        import random
        return bytes(random.getrandbits(8) for _ in range(8))


class Session:
    def __init__(self, kid, key, transport, store, hello, link_cfg, handler, on_welcome=None):
        self.kid = kid
        self._mac = cose.Mac(key)
        self._t = transport
        self._store = store
        self._hello_msg = hello  # {"type": "hello", role, fw, caps}; nonce added per attempt
        self._handler = handler
        self._on_welcome = on_welcome
        self._hello_max = link_cfg["hello_max"] * 1000
        self._retry_max = link_cfg["retry_max"] * 1000
        self.hb_s = link_cfg["hb"]
        self.seq = SeqCounter(self._load_seq, self._store_seq)
        self._deframer = framing.Deframer()
        self.window = None
        self.nonce = None
        self.welcomed = False
        self._hello_due = None
        self._hello_wait = HELLO_FIRST_MS
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
                self.events.append([m, [], 0, EVENT_FIRST_MS, True, None])

    def _load_seq(self):
        return self._store.get("seq")

    def _store_seq(self, n):
        self._store.put("seq", n)

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
        if len(self.events) >= MAX_EVENTS:
            self.events.pop(0)
            self.events_lost += 1
        self.events.append([msg, [], now, EVENT_FIRST_MS, durable, on_ack])
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
        self.nonce = nonce8()
        self._hello_wait = HELLO_FIRST_MS
        self._hello_due = now

    @property
    def hello_pending(self):
        return self._hello_due is not None

    def _send_hello(self, now):
        m = dict(self._hello_msg)
        m["nonce"] = self.nonce
        self.send(m)
        self.hellos += 1
        self._hello_due = clock.ticks_add(now, self._hello_wait)
        self._hello_wait = min(self._hello_wait * 2, self._hello_max)

    # -- the loop --

    def poll(self, now):
        """Read and handle what arrived, send what is due; returns ms until the next deadline."""
        data = self._t.read()
        if data:
            for env, err in self._deframer.feed(data):
                if err is not None:
                    self.dropped += 1
                else:
                    self._frame(env, now)
        nxt = 60000
        if self._hello_due is not None:
            d = clock.ticks_diff(self._hello_due, now)
            if d <= 0:
                self._send_hello(now)
                d = self._hello_wait
            nxt = min(nxt, d)
        if self.welcomed:
            for e in self.events:
                d = clock.ticks_diff(e[2], now)
                if d <= 0:
                    if len(e[1]) > REHELLO_AFTER:
                        self.start_hello(now)
                        e[1] = []
                        return 0
                    self._send_event(e, now)
                    d = e[3]
                nxt = min(nxt, d)
        return max(nxt, 0)

    def _send_event(self, e, now):
        msg = e[0]
        seq = self.seq.take()
        if msg.get("eid") is None:
            msg["eid"] = seq
            if e[4]:
                self._persist()
        self._t.write(codec.pack(self._mac, UP, self.kid, seq, msg))
        e[1].append(seq)
        if len(e[1]) > 8:
            e[1].pop(0)
        e[2] = clock.ticks_add(now, e[3])
        e[3] = min(e[3] * 2, self._retry_max)

    def _mac_for(self, kid):
        return self._mac if kid == self.kid else None

    def _window_for(self, kid):
        return self.window

    def _frame(self, env, now):
        try:
            r = codec.open_envelope(env, DOWN, self._mac_for, self._window_for)
        except ProtocolError as e:
            seq = getattr(e, "seq", None)
            if seq is None or isinstance(e, ReplayError):
                self.dropped += 1  # framing, forged, unknown kid, replayed: never answered
            elif self.window is None:
                self.ignored += 1
            else:
                self.seen_ms = now
                code = E_UNKNOWN_TYPE if isinstance(e, UnknownTypeError) else E_MALFORMED
                self._reply(seq, (code, getattr(e, "field", "")))
            return
        msg = r.msg
        t = msg["type"]
        if t == "welcome" or t == "resync":
            if msg["echo"] != self.nonce:
                self.ignored += 1
                return
            self.seen_ms = now
            if t == "resync":
                if self.welcomed:
                    self.ignored += 1
                    return
                self.seq.jump(msg["floor"])
                self.start_hello(now)
                return
            if self.window is None:
                self.window = ReplayWindow()
                self.window.reset(r.seq + 1)
            self.welcomed = True
            self._hello_due = None
            if msg["hb"]:
                self.hb_s = msg["hb"]
            if self._on_welcome is not None:
                self._on_welcome(msg, now)
            return
        if self.window is None:
            self.ignored += 1
            return
        self.seen_ms = now
        if t == "ack":
            self._acked(msg["ref"], None)
        elif t == "nack":
            self._acked(msg["ref"], msg)
        else:
            try:
                res = self._handler(msg)
            except Exception as e:  # a handler bug must not kill the link
                print("session: handler failed for", t, repr(e))
                res = (E_INTERNAL, "")
            self._reply(r.seq, res)
            if self.after_reply is not None:
                m, self.after_reply = self.after_reply, None
                self.send(m)

    def _acked(self, ref, nack):
        for i in range(len(self.events)):
            e = self.events[i]
            if ref in e[1]:
                self.events.pop(i)
                if nack is not None:
                    self.last_nack = nack
                self._persist()
                if e[5] is not None:
                    e[5](e[0], nack)
                return

    def _reply(self, ref, res):
        if res is None:
            self.send({"type": "ack", "ref": ref})
        else:
            self.send({"type": "nack", "ref": ref, "code": res[0], "field": res[1][:NACK_FIELD_MAX]})
