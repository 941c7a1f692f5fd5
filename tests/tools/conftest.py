"""Fixtures for park-device tests: virtual boards (sim/vboard) whose console pty the real mpremote drives."""
from __future__ import annotations

import pytest


def _vboard():
    try:
        from sim import vboard
        from sim import mpvm
    except ImportError as e:  # pragma: no cover
        pytest.fail(f"sim/vboard is not importable: {e}")
    if not mpvm.node_available():
        pytest.fail("the MicroPython VM is not installed: run ./dev setup")
    return vboard


@pytest.fixture
def vboard_factory(tmp_path):
    """Start virtual boards (real MicroPython, wall-clock time) and stop them after the test."""
    vb = _vboard()
    boards = []

    def make(**kw):
        kw.setdefault("realtime", True)
        kw.setdefault("flash_dir", tmp_path / f"flash{len(boards)}")
        b = vb.VirtualBoard(**kw).start()
        boards.append(b)
        return b
    yield make
    for b in boards:
        b.stop()


@pytest.fixture
def blank_board(vboard_factory):
    """A board with MicroPython and nothing else, as it comes from `park-device flash`."""
    return vboard_factory()


@pytest.fixture(scope="module")
def deployed_flash(tmp_path_factory):
    """A flash image with light_pole deployed once per module (deploy is the slow step)."""
    vb = _vboard()
    from park_device.deploy import deploy
    from park_device.ui import UI
    import io
    d = tmp_path_factory.mktemp("deployed")
    b = vb.VirtualBoard(realtime=True, flash_dir=d).start()
    try:
        deploy(UI(quiet=True, out=io.StringIO(), err=io.StringIO()), b.console_pty, "light_pole", timeout=10)
    finally:
        b.stop()
    return d


@pytest.fixture
def light_board(vboard_factory, deployed_flash, tmp_path):
    """A fresh board whose flash already holds the deployed light_pole firmware (not provisioned)."""
    import shutil
    flash = tmp_path / "lp-flash"
    shutil.copytree(deployed_flash, flash)
    return vboard_factory(flash_dir=flash)
