"""A battery bin over its BLE radio: the unmodified firmware on a virtual board whose
`bluetooth` module is the emulated controller, a test central on the host (sim/vboard_ble.py)
playing the gateway with the protocol package."""
from __future__ import annotations

import contextlib

import pytest

from protocol import codes
from sim.testbed import Peer, deploy_tree, vboard_available

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not vboard_available(), reason="virtual boards not installed: run ./dev setup"),
]

KID = b"c001"
TRIG, ECHO, TEMP, BATT = 5, 18, 34, 35
PINS = {"trig": TRIG, "echo": ECHO, "temp": TEMP, "batt": BATT}
APP = {"depth_mm": 1200, "top_mm": 250, "interval_s": 900}
BLE = {"kind": "ble", "uart": -1}


def adv_flags(adv: bytes | None) -> int | None:
    """The flags byte of the park manufacturer data (SPEC 2), found by type and company id."""
    i = 0
    while adv and i < len(adv):
        n, t = adv[i], adv[i + 1]
        if t == 0xFF and adv[i + 2:i + 5] == b"\xff\xff\x50":
            return adv[i + 5]
        i += n + 1
    return None


@contextlib.contextmanager
def bin_board(tmp_path, link=None, rt=None):
    from sim import vboard
    from sim.vboard_ble import BleCentral, VboardPeripheral
    img = deploy_tree(tmp_path / "img", "container_sensor", KID.decode(), PINS, APP,
                      dict({"batt_div": 2000}, **(rt or {})), dict(BLE, **(link or {})))
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", ultrasonic={"trig": TRIG, "echo": ECHO},
                             distance_mm=725, console_pty=False, name="c001") as b:
        b.set_adc(TEMP, uv=700000)
        b.set_adc(BATT, uv=3900 * 500)
        periph = VboardPeripheral(b)
        central = BleCentral(periph)
        p = Peer(b, KID, port=central)
        try:
            yield b, periph, central, p
        finally:
            p.close()


def test_bin_advertises_data_waiting_reports_over_ble_and_sleeps_with_the_radio_off(tmp_path):
    with bin_board(tmp_path) as (b, periph, central, p):
        b.advance(300)  # boot, measure: the fill report and the hello wait for a central
        adv = periph.advertisement
        assert adv is not None and adv.startswith(b"\x02\x01\x06")
        assert adv_flags(adv) == 1 and adv.endswith(KID)  # data waiting; the id, nothing secret
        assert len(adv) <= 31 and not b.events("deepsleep")
        central.connect()
        assert periph.advertisement is None and periph.mtu == 247
        central.write(b"\x00")  # the gateway's first write: notifications may start (SPEC 2)
        p.run(3000, step=50)
        assert p.of("hello") and p.of("fill")[0]["fill"] == 50
        assert b.events("deepsleep")[0]["ms"] == 900_000  # acked, lingered, asleep
        assert periph.advertisement is None and central.disconnects == 1
        radio = b.events(("ble_radio", "deepsleep"))
        assert [e.get("on") for e in radio] == [True, False, None]  # the firmware's radio off, then sleep
        assert not b.events("fw_ble_truncated") and not b.events("fw_crash")


def test_central_drop_gives_the_firmware_its_disconnect_and_it_advertises_again(tmp_path):
    with bin_board(tmp_path) as (b, periph, central, p):
        b.advance(300)
        central.connect()
        b.advance(100)
        periph.drop()  # the radio model breaks the link before anything was exchanged
        b.advance(100)
        assert adv_flags(periph.advertisement) == 1  # still holding its report: advertises again
        central.connect()
        central.write(b"\x00")
        p.run(3000, step=50)
        assert p.of("fill") and b.events("deepsleep")


def test_no_ble_on_the_chip_reports_a_radio_fault_and_falls_back_to_the_uart(tmp_path):
    from sim import vboard
    img = deploy_tree(tmp_path / "img", "container_sensor", KID.decode(), PINS, APP, {"batt_div": 2000},
                      {"kind": "ble"})  # the default UART 1 is wired: the fallback
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", ultrasonic={"trig": TRIG, "echo": ECHO},
                             distance_mm=725, console_pty=False, name="c001", without=("bluetooth",)) as b:
        b.set_adc(TEMP, uv=700000)
        p = Peer(b, KID)  # on the link UART
        try:
            p.run(3000)
            assert [(f["code"], f["value"]) for f in p.of("fault")] == [(codes.F_RADIO, codes.RADIO_NO_BLE)]
            assert p.of("fill")[0]["fill"] == 50
            assert any("ble radio cannot be used" in ln for ln in b.log())
        finally:
            p.close()


def _stranger_then_gateway(tmp_path):
    """A central connects and never writes for 12 s, then a gateway connects; returns what the
    gateway got, the stranger's disconnects and the advertisement in between."""
    with bin_board(tmp_path) as (b, periph, central, p):
        b.advance(300)
        central.connect()
        for _ in range(60):
            b.advance(200)
        dropped, adv = central.disconnects, periph.advertisement
        central.rx.clear()
        central.connect()
        central.write(b"\x00")
        p.run(5000, step=50)
        assert b.events("deepsleep") and not b.events("fw_crash")
        return p, dropped, adv


def test_a_central_that_never_writes_is_dropped_after_the_bound(tmp_path):
    """Any phone may connect to a bin: a central that does not write within the bound (10 s) is not
    a gateway. The bin ends that connection, advertises "data waiting" again while its hello is
    unanswered, and the gateway that connects next gets its hello and is welcomed."""
    p, dropped, adv = _stranger_then_gateway(tmp_path)
    assert dropped == 1 and adv_flags(adv) == 1
    assert p.of("hello") and p.of("heartbeat")


def test_a_stranger_central_does_not_take_the_report(tmp_path):
    p, _, _ = _stranger_then_gateway(tmp_path)
    assert p.of("fill")
