"""Replay protection: a sliding window for received sequence numbers and a
persisted counter for sent ones (the OSCORE scheme, RFC 8613 Appendix B.1.1).
"""

from protocol.errors import ReplayError

WINDOW = 32


class ReplayWindow:
    """Accepts each sequence number at most once, and none older than WINDOW below the highest seen.

    check() before the frame is used, accept() once its tag verified; state is
    (top, bits) so the gateway can persist it in a row.
    """

    __slots__ = ("top", "bits")

    def __init__(self, top=-1, bits=0):
        self.top = top
        self.bits = bits

    def check(self, seq):
        top = self.top
        if seq > top:
            return
        d = top - seq
        if d >= WINDOW:
            raise ReplayError("sequence number %d is older than the window (highest %d)" % (seq, top))
        if (self.bits >> d) & 1:
            raise ReplayError("sequence number %d was already received" % seq)

    def accept(self, seq):
        self.check(seq)
        top = self.top
        if seq > top:
            shift = seq - top
            self.bits = ((self.bits << shift) | 1) & 0xFFFFFFFF if shift < WINDOW else 1
            self.top = seq
        else:
            self.bits |= 1 << (top - seq)

    def reset(self, floor):
        """Accept only numbers >= floor from now on (after a resync)."""
        self.top = floor - 1
        self.bits = 0xFFFFFFFF


class SeqCounter:
    """Next sequence number to send, persisted every K numbers.

    The store holds a ceiling: numbers below it may have been used. After a
    reboot the counter resumes at the stored ceiling (= last saved + K), so no
    number is ever sent twice, at the cost of skipping at most K.
    load() returns the stored ceiling or None; store(n) must be durable before it returns.
    """

    def __init__(self, load, store, k=16):
        self._store = store
        self.k = k
        c = load()
        self.next = c if c is not None else 0
        self._ceiling = self.next + k
        store(self._ceiling)

    def take(self):
        n = self.next
        if n >= self._ceiling:
            self._store(n + self.k)
            self._ceiling = n + self.k
        self.next = n + 1
        return n

    def jump(self, floor):
        """Continue at >= floor (a resync from the gateway); persisted at once."""
        if floor > self.next:
            self.next = floor
        self._store(self.next + self.k)
        self._ceiling = self.next + self.k
