"""The tree's install boundaries: what a wheel holds, who may import whom, no path edits.

Three homes: the Pi (gateway, protocol), the board (protocol, firmware) and never installed
(sim/). These checks read the real wheel and the real sources, so a file that crosses a
boundary fails here with its name.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("protocol", "gateway", "tools/park_device", "firmware")
SIM_NAMES = ("sim", "mpvm", "vboard", "vmachine", "devsim", "fakeble", "demo", "broker", "mosquitto", "testbed")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _py_files(*tops: str) -> list[Path]:
    return [p for t in tops for p in (ROOT / t).rglob("*.py") if "node_modules" not in p.parts]


def test_wheel_holds_no_simulator_fake_or_demo(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BuildBackendWarning" not in r.stderr, r.stderr[-2000:]
    (whl,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"protocol", "gateway", "park_device"}, tops
    stems = {Path(n).stem for n in names}
    assert not stems & set(SIM_NAMES), sorted(stems & set(SIM_NAMES))
    assert "gateway/systemd/park-gateway.service" in names and "protocol/SPEC.md" in names


def test_product_never_imports_the_simulator():
    bad = [(str(p.relative_to(ROOT)), m) for p in _py_files(*PRODUCT) for m in _imports(p)
           if m.split(".")[0] in ("sim", "mpvm", "vboard", "tests", "hil_tests", "benchmarks")]
    assert not bad, bad


def test_park_device_never_imports_the_gateway():
    bad = [(str(p.relative_to(ROOT)), m) for p in _py_files("tools/park_device") for m in _imports(p)
           if m.split(".")[0] == "gateway"]
    assert not bad, bad


def _sys_attr(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in ("path", "modules") \
        and isinstance(node.value, ast.Name) and node.value.id == "sys"


def _edits_sys_path(node) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _sys_attr(node.func.value)
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        return any(_sys_attr(t) or (isinstance(t, ast.Subscript) and _sys_attr(t.value)) for t in targets)
    return False


# The one exception: a board drops its boot-only modules from sys.modules so that their bytecode
# leaves the ESP32's heap (issue 10; docs/firmware.md#footprint). Not an import-path edit.
UNLOAD = ("firmware/common/__init__.py", "forget")


def _tree_without_unload(p):
    tree = ast.parse(p.read_text(), str(p))
    if p.relative_to(ROOT).as_posix() == UNLOAD[0]:
        tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == UNLOAD[1])]
    return tree


def test_no_path_edits_outside_test_configuration():
    """sys.path and sys.modules change only through pytest's configuration (pyproject's pythonpath)."""
    bad = ["%s:%d" % (p.relative_to(ROOT), n.lineno)
           for p in _py_files("protocol", "gateway", "tools", "firmware", "sim", "benchmarks", "hil_tests", "tests")
           for n in ast.walk(_tree_without_unload(p)) if _edits_sys_path(n)]
    assert not bad, bad


def test_benchmarks_import_no_test_modules():
    tests = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"gwharness", "cli_harness"}
    bad = [(p.name, m) for p in _py_files("benchmarks") for m in _imports(p)
           if m.split(".")[0] in tests or m.split(".")[0] in ("tests", "hil_tests")]
    assert not bad, bad
