"""Runtime behaviour inside genuine MicroPython (WebAssembly port), against a test-fake
`machine` (sim/fake_machine.py) and a gateway peer built from the
protocol package. The virtual-board tests (test_runtime_vboard.py) cover the same over a real link."""
from pathlib import Path

import pytest

from sim import mpvm

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "test_runtime_mp"

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]


def test_runtime_behaviour_in_micropython():
    rep = mpvm.run_pytest_style(HERE / "cases_runtime.py", mounts={
        ROOT / "protocol": "/lib/protocol", ROOT / "firmware" / "common": "/lib/common",
        ROOT / "sim" / "fake_machine.py": "/lib/machine.py", HERE / "harness.py": "/lib/harness.py"},
        paths=["/lib"], timeout=120)
    rep.assert_all_passed(min_tests=18)
