"""Single-use token ids, remembered on flash until the token expires.

Bounded: at most `cap` ids (8 bytes each on flash). When full, expired ids are
dropped first; if every remembered id is still valid, add() refuses (the locker
fails closed: better one refused token than one replayable token).
Saved before the lock opens, so a brown-out right after an unlock cannot make
a token reusable.
"""

import struct

from locker import flash

_REC = "<II"
_SZ = 8
U32 = 0xFFFFFFFF


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
                tid, exp = struct.unpack_from(_REC, data, i)
                self._ids[tid] = exp

    def __len__(self):
        return len(self._ids)

    def __contains__(self, tid):
        return tid in self._ids

    def prune(self, now):
        """Forget ids whose token expired before `now` (unix s); return how many."""
        dead = [t for t in self._ids if self._ids[t] < now]
        for t in dead:
            del self._ids[t]
        return len(dead)

    def add(self, tid, exp, now):
        """Remember tid until exp and persist; False if the store is full of live ids."""
        if tid in self._ids:
            return True
        if len(self._ids) >= self.cap and not self.prune(now):
            return False
        self._ids[tid] = exp if exp < U32 else U32
        self._save()
        return True

    def _save(self):
        buf = bytearray(_SZ * len(self._ids))
        i = 0
        for t in self._ids:
            struct.pack_into(_REC, buf, i, t, self._ids[t])
            i += _SZ
        flash.save(self.path, buf)
