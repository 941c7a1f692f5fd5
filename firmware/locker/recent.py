"""The last N request ids of gateway unlock commands, on flash.

A retransmitted unlock (same req) must never open twice, also when the device
rebooted between opening and acking; N ids cover the gateway's retry budget.
"""

import struct

from locker import flash


class RecentReqs:
    __slots__ = ("path", "n", "_ids", "_next")

    def __init__(self, path, n=16):
        self.path = path
        self.n = n
        self._ids = []
        self._next = 0
        flash.ensure_dir(path)
        try:
            data = flash.load(path)
        except flash.CorruptError:
            data = None
        if data and len(data) >= 1:
            self._next = data[0] % n
            for i in range(1, len(data) - 3, 4):
                self._ids.append(struct.unpack_from("<I", data, i)[0])
            del self._ids[n:]

    def __contains__(self, req):
        return req in self._ids

    def add(self, req):
        if len(self._ids) < self.n:
            self._ids.append(req)
            self._next = len(self._ids) % self.n
        else:
            self._ids[self._next] = req
            self._next = (self._next + 1) % self.n
        buf = bytearray(1 + 4 * len(self._ids))
        buf[0] = self._next
        for i in range(len(self._ids)):
            struct.pack_into("<I", buf, 1 + 4 * i, self._ids[i])
        flash.save(self.path, buf)
