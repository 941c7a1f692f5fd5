"""Byte transports for the protocol link: read() what arrived, write() a frame.

Serial now; a BLE transport (same frames cut into GATT writes) will offer the
same two methods, so the session never knows which one it talks through.
"""

from common.hal import make_uart


class UartLink:
    def __init__(self, link_cfg):
        self.uart = make_uart(link_cfg["uart"], link_cfg["baud"], link_cfg["tx"], link_cfg["rx"])

    def read(self):
        """Bytes received since the last call, or None; never blocks."""
        n = self.uart.any()
        if not n:
            return None
        return self.uart.read(n)

    def write(self, data):
        self.uart.write(data)


def open_link(link_cfg):
    return UartLink(link_cfg)
