# esp32 for the virtual board: esp32.Partition with OTA app partitions, and the ESP-IDF
# bootloader's app rollback. Simulated hardware, never on a board.
#
# A board has OTA partitions only when its flash holds /_esp32/table.json, e.g.
# {"ota": 2, "size": 1572864} (ota_0, ota_1 of 1.5 MiB; a test writes it before start).
# Partition contents are files /_esp32/<label>.bin, the bootloader's state (otadata)
# /_esp32/otadata.json. The bootloader runs once per boot (_vboard_boot imports this
# module before main.py): an app that set_boot() chose boots "pending verify"; if it is
# still pending at the next boot (the app did not call mark_app_valid_cancel_rollback),
# the bootloader marks it aborted and boots the previous app again, as ESP-IDF does with
# CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE. The MicroPython VM itself does not change: what
# changes is which partition is RUNNING.
import json
import os

DIR = "/_esp32"
TABLE = DIR + "/table.json"
OTADATA = DIR + "/otadata.json"
BLOCK = 4096
_ENOENT = 2


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _save(d):
    with open(OTADATA + ".new", "w") as f:
        json.dump(d, f)
    os.rename(OTADATA + ".new", OTADATA)


_table = _load(TABLE)
_labels = ["ota_%d" % i for i in range(_table.get("ota", 0))] if _table else []
_size = _table.get("size", 1572864) if _table else 0
_od = None


def _bootloader():
    """One boot of the second-stage bootloader: choose the app, apply the rollback rule."""
    global _od
    if not _labels:
        return
    d = _load(OTADATA) or {"boot": _labels[0], "prev": _labels[0], "states": {_labels[0]: "valid"}}
    sel = d["boot"]
    st = d["states"].get(sel, "valid")
    if st == "new":
        d["states"][sel] = "pending"
    elif st == "pending":  # booted once and never confirmed: roll back
        d["states"][sel] = "aborted"
        d["boot"] = sel = d["prev"]
    d["running"] = sel
    _save(d)
    _od = d


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=BLOCK):
        if id == Partition.RUNNING:
            id = _od["running"] if _od else "factory"
        elif id == Partition.BOOT:
            id = _od["boot"] if _od else "factory"
        if id != "factory" and id not in _labels:
            raise ValueError("no partition %r" % (id,))
        self.label = id

    @staticmethod
    def find(type=TYPE_APP, subtype=-1, label=None):
        if type != Partition.TYPE_APP:
            return []
        names = _labels or ["factory"]
        return [Partition(n) for n in names if label is None or n == label]

    def info(self):
        i = _labels.index(self.label) if self.label in _labels else 0
        return (Partition.TYPE_APP, 0x10 + i if self.label in _labels else 0, 0x10000 + i * _size,
                _size or 1572864, self.label, False)

    def get_next_update(self):
        if not _labels:
            raise OSError(_ENOENT)
        i = _labels.index(self.label) if self.label in _labels else -1
        return Partition(_labels[(i + 1) % len(_labels)])

    def _path(self):
        return "%s/%s.bin" % (DIR, self.label)

    def readblocks(self, block_num, buf, offset=0):
        pos = block_num * BLOCK + offset
        n = len(buf)
        got = 0
        try:
            with open(self._path(), "rb") as f:
                f.seek(pos)
                got = f.readinto(buf) or 0  # readinto: the WebAssembly port's read() keeps its bytes alive
        except OSError:
            pass
        for i in range(got, n):
            buf[i] = 0xFF

    def writeblocks(self, block_num, buf, offset=0):
        pos = block_num * BLOCK + offset
        if pos + len(buf) > self.info()[3]:
            raise OSError(28)
        try:
            f = open(self._path(), "r+b")
        except OSError:
            f = open(self._path(), "wb")
        with f:
            f.seek(0, 2)
            end = f.tell()
            if end < pos:
                f.write(b"\xff" * (pos - end))
            f.seek(pos)
            f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.info()[3] // BLOCK
        if op == 5:
            return BLOCK
        return 0

    def set_boot(self):
        if self.label not in _labels:
            raise OSError(_ENOENT)
        d = _od
        d["prev"] = d["running"]
        d["boot"] = self.label
        d["states"][self.label] = "new"
        _save(d)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        if not _od:
            raise OSError(_ENOENT)
        _od["states"][_od["running"]] = "valid"
        _save(_od)


_bootloader()
