"""The audit log: a fixed-size ring of records on flash that survives reboots.

Every unlock, door change, alarm and fault is appended before it is reported;
a record stays marked pending until the gateway acked its event, so nothing is
lost while the gateway is away or across reboots. The ring is bounded (N
records of REC bytes): when it wraps onto a record still pending, that record
is counted in `lost` (and that count is itself reported), newest wins.

Record (little endian): seq u32, t u32 (unix s, 0 = no valid time), kind u8,
comp u8, a u8, flags u8, v i32, eid u64 (the protocol event id once first sent,
all ones before: a resend after a reboot keeps it, so the gateway de-duplicates),
crc16 over the first 24 bytes. Each record is rewritten whole, so a torn write
shows as a CRC error and is skipped.
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

import struct

from locker import flash
from protocol.crc16 import crc16

_FMT = const("<IIBBBBiQ")
_BODY = const(24)
REC = const(26)
_EMPTY = const(0xFFFFFFFF)
_NO_EID = const(0xFFFFFFFFFFFFFFFF)

# Record.kind
ACCESS = const(1)
DOOR = const(2)
ALARM = const(3)
FAULT = const(4)

F_ACKED = const(1)


class Record:
    __slots__ = ("seq", "t", "kind", "comp", "a", "flags", "v", "eid")

    def __init__(self, seq, t, kind, comp, a, flags, v, eid=_NO_EID):
        self.seq = seq
        self.t = t
        self.kind = kind
        self.comp = comp
        self.a = a
        self.flags = flags
        self.v = v
        self.eid = eid

    def msg(self):
        """The protocol event for this record, with its original time and, once assigned, its eid."""
        k = self.kind
        if k == ACCESS:
            m = {"type": "access", "comp": self.comp, "result": self.a, "token": self.v & 0xFFFFFFFF}
        elif k == DOOR:
            m = {"type": "door", "comp": self.comp, "open": bool(self.a & 1), "authorized": bool(self.a & 2)}
        elif k == ALARM:
            m = {"type": "alarm", "code": self.a, "comp": self.comp, "value": self.v}
        else:
            m = {"type": "fault", "code": self.a, "value": self.v}
        m["t"] = self.t
        if self.eid != _NO_EID:
            m["eid"] = self.eid
        return m


class AuditLog:
    def __init__(self, path, n=128):
        self.path = path
        self.n = n
        self.next_seq = 0
        self.lost = 0
        self.bad = 0
        self._pending = []  # type: list
        self._buf = bytearray(REC)
        flash.ensure_dir(path)
        try:
            f = open(path, "rb")
        except OSError:
            with open(path, "wb") as w:  # formatted: every slot empty
                b = b"\xff" * REC
                for _ in range(n):
                    w.write(b)
            return
        with f:
            top = -1
            for _ in range(n):
                if f.readinto(self._buf) != REC:
                    break
                r = self._parse(self._buf)
                if r is None:
                    continue
                if r.seq > top:
                    top = r.seq
                if not r.flags & F_ACKED:
                    self._pending.append(r.seq)
        self._pending.sort()
        self.next_seq = top + 1

    def _parse(self, b):
        seq = struct.unpack_from("<I", b, 0)[0]
        if seq == _EMPTY:
            return None
        if crc16(memoryview(b)[:_BODY]) != (b[_BODY] << 8) | b[_BODY + 1]:
            self.bad += 1
            return None
        v = struct.unpack_from(_FMT, b, 0)
        return Record(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])

    def _write(self, r):
        b = self._buf
        struct.pack_into(_FMT, b, 0, r.seq, r.t, r.kind, r.comp, r.a, r.flags, r.v, r.eid)
        c = crc16(memoryview(b)[:_BODY])
        b[_BODY] = c >> 8
        b[_BODY + 1] = c & 0xFF
        with open(self.path, "r+b") as f:
            f.seek((r.seq % self.n) * REC)
            f.write(b)

    def read(self, seq):
        """The record with this seq, or None if it was overwritten or is unreadable."""
        with open(self.path, "rb") as f:
            f.seek((seq % self.n) * REC)
            if f.readinto(self._buf) != REC:
                return None
        r = self._parse(self._buf)
        return r if r is not None and r.seq == seq else None

    def append(self, t, kind, comp, a, v=0):
        """Store a new pending record and return it."""
        seq = self.next_seq
        old = seq - self.n
        if old >= 0 and self._pending and self._pending[0] == old:
            self._pending.pop(0)
            self.lost += 1
        r = Record(seq, t or 0, kind, comp, a, 0, v)
        self._write(r)
        self.next_seq = seq + 1
        self._pending.append(seq)
        return r

    def ack(self, seq):
        """Mark a record delivered; False if it is not pending (already acked or overwritten)."""
        if seq not in self._pending:
            return False
        r = self.read(seq)
        self._pending.remove(seq)
        if r is not None:
            r.flags |= F_ACKED
            self._write(r)
        return True

    def set_eid(self, seq, eid):
        """Remember the event id the link gave a pending record (so resends keep it)."""
        r = self.read(seq)
        if r is not None and r.eid != eid:
            r.eid = eid
            self._write(r)

    def pending(self):
        """Seqs of records not yet acked by the gateway, oldest first."""
        return self._pending

    def scan(self, fn):
        """Call fn(record) for every readable record, in slot order (one pass, one file open)."""
        b = bytearray(REC)
        with open(self.path, "rb") as f:
            for _ in range(self.n):
                if f.readinto(b) != REC:
                    return
                r = self._parse(b)
                if r is not None:
                    fn(r)

    def records(self):
        """Every readable record, oldest first (diagnostics and tests; allocates)."""
        out = []  # type: list
        self.scan(out.append)
        out.sort(key=lambda r: r.seq)
        return out
