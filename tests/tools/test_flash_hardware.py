"""park-device flash against a real ESP32 ROM bootloader: needs a board on a bench.

Run on a bench with a board in download mode and a MicroPython image for it:
    PARK_BENCH_PORT=/dev/ttyUSB0 PARK_BENCH_IMAGE=ESP32_GENERIC.bin ./dev test tests/tools -m hardware
Without both variables the tests are skipped with that reason (there is no chip here);
tests/tools/test_units.py covers what can run without one (image headers, the wrong-chip
refusal against a named fake ROM loader, a silent port).
"""

import json
import os

import pytest

from cli_harness import run_cli

PORT = os.environ.get("PARK_BENCH_PORT")
IMAGE = os.environ.get("PARK_BENCH_IMAGE")

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(not (PORT and IMAGE), reason="needs hardware: set PARK_BENCH_PORT and PARK_BENCH_IMAGE"),
]


def test_flash_writes_the_image_after_checking_the_chip(capsys):
    rc, out, err = run_cli(capsys, "flash", "--port", PORT, "--image", IMAGE, "--json")
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] is True


def test_flash_refuses_an_image_for_another_chip(capsys, tmp_path):
    data = bytearray(open(IMAGE, "rb").read())
    # the image header's chip id (bytes 12-13) claims another chip: ESP32-S3 (9), or ESP32 (0) for an S3
    data[12:14] = (9 if data[12] != 9 else 0).to_bytes(2, "little")
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(bytes(data))
    rc, out, err = run_cli(capsys, "flash", "--port", PORT, "--image", wrong, "--json")
    assert rc != 0 and "wrong_chip" in (out + err)
