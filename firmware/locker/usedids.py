"""The locker's single-use memory on flash: token ids until they expire, the last gateway
unlock request ids.

UsedIds is bounded: at most `cap` ids (8 bytes each on flash). When full, expired ids are
dropped first; if every remembered id is still valid, add() refuses (the locker fails
closed: better one refused token than one replayable token). Saved before the lock
opens, so a brown-out right after an unlock cannot make a token reusable.

RecentReqs keeps the last N request ids of gateway unlock commands: a retransmitted
unlock (same req) must never open twice, also when the device rebooted between opening
and acking; N ids cover the gateway's retry budget. On flash: the ring's next slot (u8),
then the ids (u32 each).
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

import struct

from locker import flash

_SZ = const(8)
_U32 = const(0xFFFFFFFF)


class UsedIds:
    __slots__ = ("path", "cap", "_ids", "corrupt")

    def __init__(self, path, cap):
        self.path = path
        self.cap = cap
        self._ids = {}
        self.corrupt = False
        flash.ensure_dir(path)
        try:
            data = flash.load(path)
        except flash.CorruptError:
            self.corrupt = True
            data = None
        if data:
            for i in range(0, len(data) - _SZ + 1, _SZ):
                tid, exp = struct.unpack_from("<II", data, i)
                self._ids[tid] = exp

    def __len__(self):
        return len(self._ids)

    def __contains__(self, v):
        return v in self._ids

    def add(self, v, exp, now):
        """Remember token id v until exp (unix s) and persist; when full, forget the ids whose token
        expired before `now` first; False if the store is full of live ids."""
        ids = self._ids
        if v in ids:
            return True
        if len(ids) >= self.cap:
            dead = [t for t in ids if ids[t] < now]
            if not dead:
                return False
            for t in dead:
                del ids[t]
        ids[v] = exp if exp < _U32 else _U32
        buf = bytearray(_SZ * len(ids))
        i = 0
        for t in ids:
            struct.pack_into("<II", buf, i, t, ids[t])
            i += _SZ
        flash.save(self.path, buf)
        return True


class RecentReqs:
    __slots__ = ("path", "n", "_ids")

    def __init__(self, path, n=16):
        self.path = path
        self.n = n
        self._ids = []  # oldest first
        flash.ensure_dir(path)
        try:
            data = flash.load(path)
        except flash.CorruptError:
            data = None
        if data:
            ids = [struct.unpack_from("<I", data, i)[0] for i in range(1, len(data) - 3, 4)]
            del ids[n:]
            i = data[0] % n  # the next slot of a full ring holds the oldest
            self._ids = ids[i:] + ids[:i]

    def __contains__(self, req):
        return req in self._ids

    def add(self, req):
        ids = self._ids
        ids.append(req)
        if len(ids) > self.n:
            ids.pop(0)
        buf = bytearray(1 + 4 * len(ids))
        buf[0] = len(ids) % self.n
        for i in range(len(ids)):
            struct.pack_into("<I", buf, 1 + 4 * i, ids[i])
        flash.save(self.path, buf)
