"""The gateway's seams are typed, and the parts on either side of them type-check against them (mypy)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["gateway/seams.py", "gateway/events.py", "gateway/downlink.py", "gateway/devices.py", "gateway/session.py",
           "gateway/downcounter.py", "gateway/statelock.py", "gateway/configread.py", "gateway/config.py",
           "gateway/uplink/config.py", "gateway/uplink/outbox.py", "gateway/uplink/outbox_store.py",
           "gateway/control/__init__.py"]


def test_seams_and_the_parts_around_them_type_check(tmp_path):
    pytest.importorskip("mypy")
    cp = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                         "--no-incremental", "--cache-dir", str(tmp_path / "cache"), *MODULES],
                        capture_output=True, text=True, cwd=ROOT)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Success" in cp.stdout
