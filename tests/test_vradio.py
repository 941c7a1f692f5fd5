"""The virtual radio: the emulated `bluetooth`, `network` and `socket` modules of a virtual
board as a chip's radio would behave, from small firmwares written like device code, and
sim/vboard_ble.VboardPeripheral as a peripheral of the fake BLE radio."""
from __future__ import annotations

import asyncio
import socket
import textwrap
import time

import pytest

from sim import mpvm
from sim.vboard import VirtualBoard

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]

RX = "7061726b-0001-4c69-6e6b-000000000002"
TX = "7061726b-0001-4c69-6e6b-000000000003"

# a GATT echo server: what the central writes comes back as one notification; "bye" disconnects
ECHO_FW = textwrap.dedent('''
    import asyncio, bluetooth
    b = bluetooth.BLE()
    b.active(True)
    b.config(mtu=100)
    S = (bluetooth.UUID("7061726b-0001-4c69-6e6b-000000000001"),
         ((bluetooth.UUID("%s"), bluetooth.FLAG_WRITE_NO_RESPONSE),
          (bluetooth.UUID("%s"), bluetooth.FLAG_NOTIFY)))
    ((rx, tx),) = b.gatts_register_services((S,))
    b.gatts_set_buffer(rx, 256, True)
    seen = []
    def irq(ev, data):
        seen.append(ev)
        print("irq", ev, data[0], data[1] if ev in (3, 21) else "")
        if ev == 3:
            v = b.gatts_read(rx)
            if v == b"bye":
                b.gap_disconnect(data[0])
            else:
                b.gatts_notify(data[0], tx, v + v)
        elif ev == 2:
            b.gap_advertise(100000, b"\\x02\\x01\\x06")
    b.irq(irq)
    b.gap_advertise(100000, b"\\x02\\x01\\x06\\x03\\xff\\xff\\xff")
    async def main():
        while True:
            await asyncio.sleep_ms(100)
    asyncio.run(main())
''' % (RX, TX))


def ble_board(tmp_path, **kw):
    return VirtualBoard(firmware_files={"main.py": _write(tmp_path, ECHO_FW)}, flash_dir=tmp_path / "f",
                        console_pty=False, **kw)


def _write(tmp_path, text):
    p = tmp_path / "main.py"
    p.write_text(text)
    return p


def test_gatt_server_connect_mtu_write_notify_disconnect(tmp_path):
    from sim.vboard_ble import BleCentral, VboardPeripheral
    with ble_board(tmp_path) as b:
        periph = VboardPeripheral(b, mtu=247)
        assert periph.advertisement == b"\x02\x01\x06\x03\xff\xff\xff"
        assert periph.mtu == 100  # the firmware prefers 100: the exchange settles there
        c = BleCentral(periph)
        c.connect()
        b.advance(50)
        assert periph.advertisement is None  # a connection ends advertising
        c.write(b"ab")
        b.advance(50)
        assert b.wait_for(lambda: c.rx == bytearray(b"abab"), timeout=5)
        assert "irq 1 1 " in b.log() and "irq 21 1 100" in b.log() and "irq 3 1 3" in b.log()  # RX is handle 3
        c.write(b"x" * 60)  # the echo is 120 bytes: one notification carries MTU-3 = 97
        b.advance(50)
        time.sleep(0.1)
        assert len(c.read()) == 4 + 97 and b.events("fw_ble_truncated")[0]["mtu"] == 100
        c.write(b"bye")     # the firmware ends the connection: the central hears it
        b.advance(50)
        b.wait_for(lambda: c.disconnects == 1, timeout=5)
        assert not c.connected and periph.advertisement == b"\x02\x01\x06"  # advertising again


def test_central_disconnect_and_drop_reach_the_firmware(tmp_path):
    from sim.vboard_ble import BleCentral, VboardPeripheral
    with ble_board(tmp_path) as b:
        periph = VboardPeripheral(b)
        c = BleCentral(periph)
        c.connect()
        b.advance(50)
        c.disconnect()
        b.advance(50)
        assert "irq 2 1 " in b.log() and periph.advertisement == b"\x02\x01\x06"
        c.connect()
        b.advance(50)
        periph.drop()  # the radio model breaks the link
        b.advance(50)
        b.wait_for(lambda: c.disconnects == 1, timeout=5)
        assert [ln for ln in b.log() if ln.startswith("irq 2 ")] == ["irq 2 1 ", "irq 2 2 "]


def test_connection_refused_while_not_advertising_or_asleep(tmp_path):
    from sim.vboard_ble import BleCentral, VboardPeripheral
    fw = "import bluetooth\nb = bluetooth.BLE()\nb.active(True)\n"  # radio on, not advertising
    with VirtualBoard(firmware_files={"main.py": _write(tmp_path, fw)}, flash_dir=tmp_path / "f",
                      console_pty=False) as b:
        periph = VboardPeripheral(b)
        assert periph.advertisement is None
        c = BleCentral(periph)
        c.connect()
        b.advance(50)
        b.wait_for(lambda: c.disconnects == 1, timeout=5)
        assert not c.connected


def test_a_chip_without_the_module(tmp_path):
    fw = "try:\n    import bluetooth\nexcept ImportError as e:\n    print('no', e)\n"
    with VirtualBoard(firmware_files={"main.py": _write(tmp_path, fw)}, flash_dir=tmp_path / "f",
                      console_pty=False, without=("bluetooth",)) as b:
        assert b.log()[0].startswith("no ")


def test_notifications_reach_an_asyncio_central_on_its_loop(tmp_path):
    # a real-time board and FakeBle's bleak-like client, as the gateway's BLE link uses it
    from sim.fakeble import FakeBleClient
    from sim.vboard_ble import VboardPeripheral

    async def scenario(b):
        periph = VboardPeripheral(b)
        got = asyncio.Queue()
        loop = asyncio.get_running_loop()
        c = FakeBleClient(periph, lambda _c: got.put_nowait("gone"))
        await c.connect()
        await c.start_notify(TX, lambda _ch, d: (asyncio.get_running_loop() is loop) and got.put_nowait(bytes(d)))
        await c.write_gatt_char(RX, b"hi")
        assert await asyncio.wait_for(got.get(), 5) == b"hihi"
        await c.write_gatt_char(RX, b"bye")
        assert await asyncio.wait_for(got.get(), 5) == "gone"

    with ble_board(tmp_path, realtime=True) as b:
        asyncio.run(scenario(b))


WIFI_FW = textwrap.dedent('''
    import asyncio, errno, network, select, socket
    w = network.WLAN(network.STA_IF)
    w.active(True)
    w.connect("park", "%s")
    async def main():
        while not w.isconnected():
            await asyncio.sleep_ms(100)
        print("joined", w.status())
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(socket.getaddrinfo("10.0.0.1", 4710)[0][-1])
        except OSError as e:
            print("connect", e.errno == errno.EINPROGRESS)
        p = select.poll()
        p.register(s, select.POLLOUT | select.POLLIN)
        while True:
            ev = p.poll(0)
            if ev and ev[0][1] & select.POLLOUT:
                break
            await asyncio.sleep_ms(50)
        s.send(b"hello")
        while True:
            try:
                d = s.recv(64)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    print("error", e.errno)
                    return
                await asyncio.sleep_ms(50)
                continue
            print("got", d)
            if not d:
                return
            s.send(d.upper())
    asyncio.run(main())
''')


def test_wifi_join_and_tcp_to_a_real_server_then_out_of_range(tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    fw = _write(tmp_path, WIFI_FW % "right-psk")
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f", console_pty=False,
                      wifi={"ssid": "park", "psk": "right-psk", "gateway": srv.getsockname()}) as b:
        b.advance(1000)
        assert "joined" not in " ".join(b.log())  # a join takes virtual time (2 s)
        b.advance(1500)
        conn, _ = srv.accept()
        conn.settimeout(5)
        b.run_until(lambda _b: any(ln.startswith("connect") for ln in b.log()), step_ms=50, max_ms=5000)
        b.advance(200)
        assert conn.recv(64) == b"hello"
        conn.sendall(b"park")
        b.run_until(lambda _b: "got b'park'" in b.log(), step_ms=50, max_ms=5000)
        b.advance(100)
        assert conn.recv(64) == b"PARK"
        b.set_wifi(up=False)  # out of range: the connection is gone for both ends
        assert conn.recv(64) == b""
        b.run_until(lambda _b: any(ln.startswith("error") for ln in b.log()), step_ms=50, max_ms=5000)
        assert b.events("wifi_tcp")[0]["host"] == "10.0.0.1" and "right-psk" not in str(b.events())
    srv.close()


def test_wifi_wrong_passphrase_is_refused(tmp_path):
    fw = _write(tmp_path, WIFI_FW % "wrong-psk")
    with VirtualBoard(firmware_files={"main.py": fw}, flash_dir=tmp_path / "f", console_pty=False,
                      wifi={"ssid": "park", "psk": "right-psk", "gateway": ("127.0.0.1", 9)}) as b:
        b.advance(5000)
        assert b.events("wifi")[0]["status"] == 202 and not any("joined" in ln for ln in b.log())
