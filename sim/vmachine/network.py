# network (virtual-board build): network.WLAN as a station, joined to the access point the
# host describes (VirtualBoard(wifi={...})). The join takes virtual time and succeeds only
# with that AP's ssid and passphrase, in range; TCP sockets (the `socket` module beside
# this one) then reach the real loopback address the host gave as the park's gateway.
# The passphrase is compared on the board's side and never leaves it in an event or log.
import js as _js
import binascii as _ba

try:
    _vb = _js.vboard
except AttributeError:
    raise ImportError("network: no vboard is running this VM")

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204


class WLAN:
    def __init__(self, iface=STA_IF):
        if iface != STA_IF:
            raise ValueError("the virtual board emulates the station interface only")

    def active(self, v=None):
        if v is None:
            return _vb.wifi_active(-1) == 1
        _vb.wifi_active(1 if v else 0)
        return bool(v)

    def connect(self, ssid=None, key=None, **kw):
        if _vb.wifi_active(-1) != 1:
            raise OSError("Wifi Not Started")
        _vb.wifi_connect(ssid or "", key or "")

    def disconnect(self):
        _vb.wifi_disconnect()

    def isconnected(self):
        return _vb.wifi_status() == STAT_GOT_IP

    def status(self, param=None):
        if param == "rssi":
            return -60
        return _vb.wifi_status()

    def ifconfig(self, *a):
        return ("10.0.0.2", "255.255.255.0", "10.0.0.1", "10.0.0.1")

    def config(self, *a, **kw):
        if a and a[0] == "mac":
            return _ba.unhexlify(_vb.unique_id())
        return None
