"""Wi-Fi station + TCP client transport for mains devices (poles, lockers).

Every step is polled from read()/write() and none blocks: the join, a non-blocking
connect watched with select.poll, every send and receive. A failed step waits a
backoff (1 s, doubling up to link.backoff_max) before the next try, so the control
loop keeps running (a pole keeps lighting its path) while the network is down.
link.host should be an IP address: a name would block in getaddrinfo.
The config holds the passphrase: nothing here prints or reports it.
"""

import errno
import select
import socket

import network
from micropython import const

from common import clock
from common.link import RadioLink

_JOIN_MS = const(15000)
_CONNECT_MS = const(10000)
_FIRST_MS = const(1000)
_RX = const(512)
_DOWN = const(0)
_JOIN = const(1)
_CONNECT = const(2)
_UP = const(3)


class WifiLink(RadioLink):
    def __init__(self, cfg):
        RadioLink.__init__(self)
        w = network.WLAN(network.STA_IF)
        w.active(True)
        self._w = w
        self.cfg = cfg
        self._max = cfg["backoff_max"] * 1000
        self._wait = _FIRST_MS
        self._st = _DOWN
        self._due = clock.ticks_ms()
        self._since = 0
        self._s = None
        self.connects = 0
        self.failures = 0

    def _fail(self, now):
        s = self._s
        self._s = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self.failures += 1
        self._st = _DOWN
        self._due = clock.ticks_add(now, self._wait)
        self._wait = min(self._wait * 2, self._max)

    def _send(self, chunk):
        s = self._s
        if s is None:
            return 0
        try:
            return s.send(chunk) or 0
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return 0
            raise

    def _pump(self, now):
        st = self._st
        w = self._w
        if st == _UP:
            if not w.isconnected():
                self._fail(now)
        elif clock.ticks_diff(now, self._due) >= 0:
            cfg = self.cfg
            try:
                if st <= _JOIN and w.isconnected():  # joined: a non-blocking connect to the gateway
                    a = socket.getaddrinfo(cfg["host"], cfg["port"])[0][-1]
                    self._s = s = socket.socket()
                    s.setblocking(False)
                    try:
                        s.connect(a)
                    except OSError as e:
                        if e.errno != errno.EINPROGRESS:
                            raise
                    self._st = _CONNECT
                    self._since = now
                elif st == _DOWN:
                    w.connect(cfg["ssid"], cfg["psk"])
                    self._st = _JOIN
                    self._since = now
                elif st == _JOIN:
                    if (w.status() in (network.STAT_NO_AP_FOUND, network.STAT_WRONG_PASSWORD)
                            or clock.ticks_diff(now, self._since) >= _JOIN_MS):
                        w.disconnect()
                        self._fail(now)
                else:  # connecting: the socket turns writable once the gateway accepted
                    p = select.poll()
                    p.register(self._s, select.POLLOUT)
                    ev = p.poll(0)
                    if ev:
                        if ev[0][1] & (select.POLLERR | select.POLLHUP):
                            self._fail(now)
                        else:
                            self._st = _UP
                            self._wait = _FIRST_MS
                            self._peer = True
                            self.connects += 1
                    elif clock.ticks_diff(now, self._since) >= _CONNECT_MS:
                        self._fail(now)
            except OSError:  # refused (no route, "Wifi Internal Error"...): the backoff, then again
                self._fail(now)
        if self._st != _UP:
            return False
        try:
            self.drain(self._send, _RX)
        except OSError:
            self._fail(now)
            return False
        return True

    def read(self):
        now = clock.ticks_ms()
        if not self._pump(now):
            return None
        s = self._s
        if s is None:
            return None
        try:
            d = s.recv(_RX)
        except OSError as e:
            if e.errno != errno.EAGAIN:
                self._fail(now)
            return None
        if not d:  # the gateway closed the connection
            self._fail(now)
            return None
        return d

    def write(self, data):
        self.hold(data)
        self._pump(clock.ticks_ms())

    def busy(self):
        return False  # a mains device does not sleep waiting for its network

    def close(self):
        try:
            if self._s is not None:
                self._s.close()
            self._w.active(False)
        except OSError:
            pass
        self._s = None
