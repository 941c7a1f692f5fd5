"""CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout).

binascii.crc_hqx is exactly this CRC when started at 0xFFFF; CPython has it in C.
MicroPython lacks it, so a device looks the CRC up four bits at a time in a 32-byte
constant (big-endian pairs): two lookups per byte instead of the 512-byte byte-wise
table's one, for 480 bytes of heap less; building any table at import would cost every
wake from deep sleep milliseconds.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

try:
    from binascii import crc_hqx
except ImportError:
    crc_hqx = None

if crc_hqx is None:
    _TABLE = const(b"\x00\x00\x10\x21\x20\x42\x30\x63\x40\x84\x50\xa5\x60\xc6\x70\xe7\x81\x08\x91\x29\xa1\x4a\xb1\x6b\xc1\x8c\xd1\xad\xe1\xce\xf1\xef")

    def crc16(data, crc=0xFFFF):
        t = _TABLE
        for b in data:
            i = ((crc >> 12) ^ (b >> 4)) << 1
            crc = ((crc << 4) & 0xFFF0) ^ (t[i] << 8) ^ t[i + 1]
            i = ((crc >> 12) ^ (b & 15)) << 1
            crc = ((crc << 4) & 0xFFF0) ^ (t[i] << 8) ^ t[i + 1]
        return crc

else:

    def crc16(data, crc=0xFFFF):
        return crc_hqx(data, crc)
