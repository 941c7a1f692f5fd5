"""Small durable files: whole-file replace via a temporary and rename, CRC-checked.

A brown-out during save leaves either the old or the new file (littlefs rename
is atomic); a torn or bit-rotten file is detected by its CRC and reported as
corrupt, never read as valid data.
"""

import os

from protocol.crc16 import crc16


class CorruptError(Exception):
    pass


def ensure_dir(path):
    """Create the parent directories of an absolute file path."""
    cur = ""
    for p in path[: path.rfind("/")].split("/"):
        if p:
            cur += "/" + p
            try:
                os.mkdir(cur)
            except OSError:
                pass


def save(path, data):
    """Write data + CRC16 to path atomically."""
    tmp = path + ".tmp"
    c = crc16(data)
    with open(tmp, "wb") as f:
        f.write(data)
        f.write(bytes((c >> 8, c & 0xFF)))
    try:
        os.rename(tmp, path)
    except OSError:  # a FAT volume will not rename onto an existing file
        os.remove(path)
        os.rename(tmp, path)


def load(path):
    """Return the stored bytes, None if the file does not exist; raise CorruptError if its CRC fails."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if len(raw) < 2:
        raise CorruptError(path + ": truncated")
    data = raw[:-2]
    if crc16(data) != (raw[-2] << 8) | raw[-1]:
        raise CorruptError(path + ": CRC mismatch")
    return data
