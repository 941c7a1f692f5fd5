"""The portable protocol tests again, inside genuine MicroPython (WebAssembly port under Node).

Each module of tests/protocol/portable/ runs in one VM with protocol/ and the
vectors mounted where a device would have them, so code that works only on
CPython fails here.
"""

from pathlib import Path

import pytest

from sim import mpvm

ROOT = Path(__file__).resolve().parents[2]
PORTABLE = Path(__file__).resolve().parent / "portable"
MODULES = sorted(p.name for p in PORTABLE.glob("test_*.py"))

pytestmark = pytest.mark.micropython


def mounts():
    m = {ROOT / "protocol": "/lib/protocol", ROOT / "protocol" / "vectors": "/vectors"}
    for p in PORTABLE.glob("*.py"):
        if not p.name.startswith("test_"):
            m[p] = "/lib/" + p.name
    return m


@pytest.mark.parametrize("module", MODULES)
def test_portable_module_in_micropython(module):
    mpvm.ensure()
    report = mpvm.run_pytest_style(PORTABLE / module, mounts=mounts(), paths=["/lib"], timeout=300)
    report.assert_all_passed(min_tests=1)
