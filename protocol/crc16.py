"""CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout).

binascii.crc_hqx is exactly this CRC when started at 0xFFFF; CPython has it in C.
MicroPython lacks it, so a 512-byte table is built once at import.
"""

try:
    from binascii import crc_hqx as _hqx
except ImportError:
    _hqx = None

if _hqx is None:
    from array import array

    _TABLE = array("H", [0] * 256)
    for _i in range(256):
        _c = _i << 8
        for _ in range(8):
            _c = ((_c << 1) ^ 0x1021) if _c & 0x8000 else (_c << 1)
        _TABLE[_i] = _c & 0xFFFF

    def crc16(data, crc=0xFFFF):
        t = _TABLE
        for b in data:
            crc = ((crc << 8) & 0xFF00) ^ t[(crc >> 8) ^ b]
        return crc

else:

    def crc16(data, crc=0xFFFF):
        return _hqx(data, crc)
