# socket (virtual-board build): the non-blocking TCP client subset of MicroPython's socket,
# over the board's virtual Wi-Fi to a real loopback TCP address on the host (every connect
# goes to the gateway address the host gave; the address the firmware asked for is recorded
# as a `wifi_tcp` event). The WebAssembly port has no socket module. Blocking calls are not
# emulated (they would stop the virtual clock): use setblocking(False) and select.poll,
# which works on these sockets through ioctl, as on an ESP32.
import io
import errno
import binascii as _ba
import js as _js

try:
    _vb = _js.vboard
except AttributeError:
    raise ImportError("socket: no vboard is running this VM")

AF_INET = 2
SOCK_STREAM = 1
IPPROTO_TCP = 6
SOL_SOCKET = 1
SO_REUSEADDR = 4


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    return [(AF_INET, SOCK_STREAM, IPPROTO_TCP, "", (host, port))]


class socket(io.IOBase):
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        self._id = -1
        self._block = True

    def setblocking(self, flag):
        self._block = bool(flag)

    def settimeout(self, t):
        self._block = t is None or t > 0

    def setsockopt(self, *a):
        pass

    def connect(self, addr):
        if self._block:
            raise OSError(errno.EOPNOTSUPP)  # see the module comment
        n = _vb.sock_open(str(addr[0]), int(addr[1]))
        if n < 0:
            raise OSError(-n)
        self._id = n
        raise OSError(errno.EINPROGRESS)

    def send(self, data):
        n = _vb.sock_send(self._id, _ba.hexlify(bytes(data)).decode())
        if n < 0:
            raise OSError(-n)
        return n

    write = send

    def recv(self, n):
        h = _vb.sock_recv(self._id, n)
        if not h:
            raise OSError(errno.EAGAIN)
        if h[0] == "!":
            if len(h) == 1:
                return b""
            raise OSError(int(h[1:]))
        return _ba.unhexlify(h)

    read = recv

    def close(self):
        if self._id >= 0:
            _vb.sock_close(self._id)
            self._id = -1

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL: ready flags, errors and hang-up always reported
            return _vb.sock_poll(self._id) & (arg | 24)
        if req == 4:  # MP_STREAM_CLOSE
            self.close()
        return 0
