"""The locker logic units, run inside the genuine MicroPython VM (WebAssembly port)."""

from pathlib import Path

import pytest

import mpvm

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]


def test_locker_units_pass_in_micropython():
    rep = mpvm.run_pytest_style(
        Path(__file__).with_name("test_locker_units.py"),
        mounts={ROOT / "firmware" / "locker": "/lib/locker", ROOT / "protocol": "/lib/protocol"},
        paths=["/lib"],
    )
    rep.assert_all_passed(min_tests=25)
