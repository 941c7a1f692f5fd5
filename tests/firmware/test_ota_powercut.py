"""Power cuts during updates (issue 11): a cut at every flash write from the commit on, and 200 at
seeded random flash writes of an update,
in genuine MicroPython with a fault-injecting file layer around the unmodified common.ota and
otaboot (test_ota_mp/cases_powercut.py); each ends on the old or the new version and the update
then completes. test_ota_vboard.py proves cuts on a whole virtual board (power_cycle)."""
from pathlib import Path

import pytest

from sim import mpvm

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "test_ota_mp"

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]


def test_power_cuts_in_micropython():
    rep = mpvm.run_pytest_style(HERE / "cases_powercut.py", mounts={
        ROOT / "protocol": "/lib/protocol", ROOT / "firmware" / "common": "/lib/common",
        ROOT / "sim" / "fake_machine.py": "/lib/machine.py"}, paths=["/lib", "/lib/common"], timeout=120)
    rep.assert_all_passed(min_tests=5)
    assert "(200 at random)" in rep.result.stdout
