# container_sensor App with the UART (A02YYUW-style) sensor, inside genuine MicroPython on
# the runtime tests' fake machine (the virtual board cannot feed a second UART yet).
import machine

import harness
from harness import Board, provision, wipe
from container_sensor.app import App

PINS = {"us": {"uart": 2, "tx": 4, "rx": 5}, "temp": 34, "batt": 35}


def _frame(mm):
    h, l = mm >> 8, mm & 0xFF
    return bytes((0xFF, h, l, (0xFF + h + l) & 0xFF))


def _setup(temp_c=20):
    wipe()
    cfg = provision(app={"sensor": "uart", "depth_mm": 1200, "top_mm": 250, "pings": 3}, role="container_sensor",
                    rt={"batt_div": 2000})
    cfg["pins"] = PINS
    harness.config.write_json("/config.json", cfg)
    machine.adc_uv[34] = 500000 + temp_c * 10000
    machine.adc_uv[35] = 1950000


def _wake(b, frames):
    """Feed one frame per ping and run until the App asks for deep sleep."""
    u = machine.uarts[2]
    for f in frames:
        u.rx.extend(f)
        try:
            b.run(70)
        except machine.DeepSleep as e:
            return e.args[0]
    try:
        b.run(20000)
    except machine.DeepSleep as e:
        return e.args[0]
    raise AssertionError("no deep sleep")


def test_uart_sensor_fill_and_sleep():
    _setup()
    b = Board(App)
    ms = _wake(b, [_frame(725)] * 4)
    fills = [m for s, m in b.recv() if m["type"] == "fill"]
    assert fills[0]["fill"] == 50 and fills[0]["temp"] == 20 and fills[0]["batt"] == 195
    assert ms == 900000


def test_uart_sensor_rescaled_by_temperature():
    # the sensor computed 725 mm for 20 °C; at -20 °C sound is 7 % slower: 674 mm, 55 % not 50 %
    _setup(temp_c=-20)
    b = Board(App)
    _wake(b, [_frame(725)] * 4)
    fill = [m for s, m in b.recv() if m["type"] == "fill"][0]["fill"]
    assert fill == 55, fill


def test_uart_sensor_silent_is_a_fault_not_a_fill():
    _setup()
    b = Board(App)
    bad = bytearray(_frame(725))
    bad[3] ^= 0x55
    _wake(b, [bytes(bad), b"", b"\x00\x01"])
    got = b.recv()
    assert [m["fill"] for s, m in got if m["type"] == "fill"] == [None]
    assert b.rt.session.events[0][0]["type"] == "fault" and b.rt.session.events[0][0]["code"] == 1
