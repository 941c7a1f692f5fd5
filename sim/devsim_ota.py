"""A CPython model of a device's side of SPEC 10 (software updates): a SIMULATOR, NOT the firmware.

It answers update_offer/chunk/commit/abort the way SPEC 10 says a device does, so the
gateway's update service can be tested fast and with faults the firmware cannot be
told to have: a refusal, a lost chunk, a new version that fails its trial, a device
that stops answering. The real device side runs on virtual boards (firmware/, sim/vboard).

    dev = link.add(SimOtaDevice("l001", key, "light_pole", mpy=6))
    dev.trial_ok = False          # the next committed version fails its trial and rolls back
"""

from __future__ import annotations

import asyncio
import hashlib

from protocol import bundle, codes, messages
from protocol.codes import (E_BAD_VALUE, E_NOT_READY, UR_BUSY, UR_DIGEST, UR_DOWNGRADE, UR_IMAGE, UR_KIND, UR_MPY, UR_ROLE,
                            UR_SPACE, UR_TRIAL, US_ABORTED, US_RECEIVING, US_REFUSED, US_ROLLED_BACK, US_STAGED,
                            US_TRIAL, US_VALID)
from sim.devsim import SimDevice

_UPDATE = ("update_offer", "update_chunk", "update_commit", "update_abort")
REBOOT_S = 0.05


class SimOtaDevice(SimDevice):
    """A simulated device with two app slots. `space` bytes fit the staging slot; `trial_ok` says whether the
    next committed version passes its trial; `ignore_chunks` makes it a device that stops answering chunks."""

    def __init__(self, kid: str, key: bytes, role: str, fw: int = 10000, caps: int = 0, mpy: int = 6,
                 space: int = 1 << 20):
        super().__init__(kid, key, role, fw, caps)
        self.mpy = mpy
        self.space = space
        self.floor = 0
        self.trial_ok = True
        self.ignore_chunks = False
        self.lose_reports: set = set()  # update states whose next report is lost
        self.on_chunk = None  # callable(device, off) for a test's timeline
        self.install_s = 0.0  # after an acked commit: checking and writing the files takes this long
        self.installing = False
        self.uid = 0
        self.offer: dict | None = None
        self.buf = bytearray()
        self.ustate = codes.US_IDLE
        self.reports: list[dict] = []
        self.chunks = 0
        self.reboots = 0

    def _handle(self, seq: int, msg: dict) -> None:
        t = msg["type"]
        if t not in _UPDATE:
            super()._handle(seq, msg)
            return
        self.received.append(msg)
        getattr(self, "_" + t)(seq, msg)

    def report(self, state: int, reason: int = 0) -> None:
        r = {"type": "update", "uid": self.uid, "state": state, "off": len(self.buf), "reason": reason}
        self.reports.append(r)
        if state in self.lose_reports:
            self.lose_reports.discard(state)  # lost on the radio, once (telemetry is not acked)
            return
        self.send(r)

    def _ack(self, seq: int) -> None:
        self.send({"type": "ack", "ref": seq})

    def _nack(self, seq: int, code: int, field: str) -> None:
        self.send({"type": "nack", "ref": seq, "code": code, "field": field})

    def _update_offer(self, seq: int, m: dict) -> None:
        self._ack(seq)
        if self.installing:  # the files are being written: nothing may change now (as the firmware does)
            uid, self.uid = self.uid, m["uid"]
            self.report(US_REFUSED, UR_BUSY)
            self.uid = uid
            return
        if m["uid"] == self.uid and self.ustate != codes.US_IDLE:
            self.report(self.ustate)  # the same uid again: where it stands
            return
        why = 0
        if m["kind"] != codes.UK_APP and not self.caps & codes.CAP_OTA_IMAGE:
            why = UR_KIND
        elif messages.ROLES.get(m["role"]) != self.role:
            why = UR_ROLE
        elif m["mpy"] != self.mpy:
            why = UR_MPY
        elif m["fw"] < self.floor:
            why = UR_DOWNGRADE
        elif m["size"] > self.space:
            why = UR_SPACE
        if why:
            uid, self.uid = self.uid, m["uid"]
            self.report(US_REFUSED, why)  # nothing it held changes
            self.uid = uid
            return
        self.uid, self.offer, self.buf, self.ustate = m["uid"], m, bytearray(), US_RECEIVING
        self.report(US_RECEIVING)

    def _update_chunk(self, seq: int, m: dict) -> None:
        if self.ignore_chunks:
            return
        if m["uid"] != self.uid or self.ustate != US_RECEIVING:
            self._nack(seq, E_NOT_READY, "uid")
            return
        if m["off"] != len(self.buf):
            self._nack(seq, E_BAD_VALUE, "off")
            self.report(US_RECEIVING)
            return
        self.buf += m["data"]
        self.chunks += 1
        if self.on_chunk is not None:
            self.on_chunk(self, m["off"])
        self._ack(seq)
        if len(self.buf) >= self.offer["size"]:
            if len(self.buf) == self.offer["size"] and hashlib.sha256(self.buf).digest() == self.offer["sha"]:
                self.ustate = US_STAGED
                self.report(US_STAGED)
            else:
                self.buf = bytearray()
                self.ustate = US_REFUSED
                self.report(US_REFUSED, UR_DIGEST)

    def _update_commit(self, seq: int, m: dict) -> None:
        if m["uid"] != self.uid or self.ustate != US_STAGED:
            self._nack(seq, E_NOT_READY, "uid")
            return
        try:
            h = bundle.read_header(bytes(self.buf))
            ok = messages.ROLES.get(h.role) == self.role and h.mpy == self.mpy and h.fw >= self.floor
        except bundle.ImageError:
            ok = False
        if not ok:
            self.buf, self.ustate = bytearray(), US_REFUSED
            self._nack(seq, E_BAD_VALUE, "uid")
            self.report(US_REFUSED, UR_IMAGE)
            return
        self._ack(seq)
        self.ustate = US_TRIAL
        self.installing = True
        asyncio.get_running_loop().call_later(self.install_s + REBOOT_S, lambda: asyncio.ensure_future(self._trial(h)))

    async def _trial(self, h) -> None:
        """Reboot into the new slot; a trial that fails reboots back into the old one by itself."""
        self.reboots += 1
        self.installing = False
        old = self.fw
        if self.trial_ok:
            self.fw = h.fw
            await self.hello()
            self.floor = max(self.floor, h.floor)
            self.ustate = US_VALID
            self.report(US_VALID)
        else:
            self.fw = old
            await self.hello()
            self.ustate = US_ROLLED_BACK
            self.report(US_ROLLED_BACK, UR_TRIAL)
        self.buf = bytearray()

    def _update_abort(self, seq: int, m: dict) -> None:
        if self.ustate == US_TRIAL:
            self._nack(seq, E_NOT_READY, "uid")
            return
        self._ack(seq)
        self.buf, self.ustate = bytearray(), US_ABORTED
        self.report(US_ABORTED)
