"""mpvm: run Python code inside the genuine MicroPython VM (WebAssembly port under Node).

Why: firmware and protocol code must be tested in the interpreter that runs on the ESP32,
not in CPython. The official port (npm ``@micropython/micropython-webassembly-pyscript``,
pinned in sim/mpvm/package.json) is the same VM core; only the hardware is missing.

    from sim import mpvm
    res = mpvm.run(code="print(1+1)")                       # Result(returncode, stdout, stderr)
    res = mpvm.run(file="/app/main.py", mounts={"protocol": "/lib/protocol"}, paths=["/lib"])
    rep = mpvm.run_pytest_style("tests/mp/test_codec.py", mounts={"protocol": "/lib/protocol"},
                                paths=["/lib"])
    rep.assert_all_passed()
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = [
    "MpvmError", "MpvmUnavailable", "Result", "TestOutcome", "TestReport",
    "PACKAGE", "PACKAGE_VERSION", "MPVM_DIR", "RUNNER", "MPTEST",
    "node_path", "node_available", "ensure", "run", "run_pytest_style",
]

MPVM_DIR = Path(__file__).resolve().parent
RUNNER = MPVM_DIR / "runner.mjs"
MPTEST = MPVM_DIR / "mptest.py"
PACKAGE = "@micropython/micropython-webassembly-pyscript"
PACKAGE_VERSION = "1.27.0"
TIMEOUT_RC = 124
_MPTEST_VM_DIR = "/_mpvm"
_TESTMOD_VM_DIR = "/_mptest_mod"
_PREFIX = "@@MPTEST "


class MpvmError(Exception):
    """Base class for mpvm errors."""


class MpvmUnavailable(MpvmError):
    """Node or the MicroPython npm package is missing: the VM cannot run here."""


def node_path() -> str | None:
    """Path of the node executable ($MPVM_NODE overrides), or None."""
    env = os.environ.get("MPVM_NODE")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("node")


def package_dir() -> Path:
    return MPVM_DIR.joinpath("node_modules", *PACKAGE.split("/"))


def node_available() -> bool:
    """True when node and the pinned MicroPython package are both installed."""
    try:
        ensure()
    except MpvmUnavailable:
        return False
    return True


def ensure() -> str:
    """Return the node path or raise MpvmUnavailable with the fix (./dev setup)."""
    node = node_path()
    if not node:
        raise MpvmUnavailable("node (Node.js >= 18) is not on PATH; run ./dev setup "
                              "(it installs nodejs/npm from apt)")
    pj = package_dir() / "package.json"
    if not pj.exists():
        raise MpvmUnavailable(f"{PACKAGE} is not installed in {MPVM_DIR}/node_modules; run ./dev setup "
                              f"(it runs `npm ci` in sim/mpvm)")
    try:
        ver = json.loads(pj.read_text())["version"]
    except (OSError, ValueError, KeyError) as e:  # corrupt install
        raise MpvmUnavailable(f"cannot read {pj}: {e}; run ./dev setup") from e
    if ver != PACKAGE_VERSION:
        raise MpvmUnavailable(f"{PACKAGE} {ver} installed but {PACKAGE_VERSION} is pinned; run ./dev setup")
    return node


@dataclass
class Result:
    """Outcome of one VM run. returncode: 0 ok, 1 uncaught exception, 2 usage, 124 timeout."""
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode == TIMEOUT_RC

    def check(self) -> "Result":
        """Raise MpvmError (with the MicroPython traceback) unless the run succeeded."""
        if self.returncode != 0:
            raise MpvmError(f"MicroPython run failed (rc={self.returncode}):\n{self.stderr}{self.stdout[-2000:]}")
        return self


def _args(code, file, mounts, paths, timeout, heap) -> list[str]:
    if (code is None) == (file is None):
        raise ValueError("give exactly one of code= or file=")
    args = [ensure(), str(RUNNER)]
    for host, vm in (mounts or {}).items():
        host = Path(host)
        if not host.exists():
            raise FileNotFoundError(f"mount source {host} does not exist")
        if not str(vm).startswith("/"):
            raise ValueError(f"VM path must be absolute: {vm!r}")
        args += ["--mount", f"{host.resolve()}:{vm}"]
    for p in paths or ():
        args += ["--path", str(p)]
    if code is not None:
        args += ["--code", code]
    else:
        args += ["--main", str(file)]
    if timeout:
        args += ["--timeout-ms", str(int(timeout * 1000))]
    if heap:
        args += ["--heap", str(int(heap))]
    return args


def run(code: str | None = None, file: str | None = None, mounts: Mapping[str | os.PathLike, str] | None = None,
        paths: Sequence[str] = (), timeout: float = 60, heap: int | None = None) -> Result:
    """Run `code` (a string) or `file` (a path inside the VM fs) in a fresh MicroPython VM.

    mounts maps host files/dirs to VM paths (copied into the in-memory fs before the run);
    paths are prepended to sys.path. Top-level ``await`` works (runPythonAsync). The run
    ends when the top-level code finishes; asyncio tasks still pending are dropped.
    """
    args = _args(code, file, mounts, paths, timeout, heap)
    try:
        cp = subprocess.run(args, capture_output=True, text=True, errors="replace",
                            timeout=(timeout + 10) if timeout else None)
    except subprocess.TimeoutExpired as e:  # the runner's own timer failed: still report a timeout
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Result(TIMEOUT_RC, out, err + "\nmpvm: runner killed after timeout\n")
    if cp.returncode == 3:
        raise MpvmUnavailable(cp.stderr.strip())
    return Result(cp.returncode, cp.stdout, cp.stderr)


@dataclass
class TestOutcome:
    """One test_* function's result inside MicroPython; tb is the MicroPython traceback."""
    name: str
    status: str  # passed | failed | error | skipped
    ms: int = 0
    tb: str = ""


@dataclass
class TestReport:
    module: str
    tests: list[TestOutcome] = field(default_factory=list)
    summary: dict | None = None
    collect_error: str = ""
    result: Result | None = None

    @property
    def passed(self) -> list[TestOutcome]:
        return [t for t in self.tests if t.status == "passed"]

    @property
    def failures(self) -> list[TestOutcome]:
        return [t for t in self.tests if t.status in ("failed", "error")]

    @property
    def ok(self) -> bool:
        return self.summary is not None and not self.collect_error and not self.failures

    def format_failures(self) -> str:
        parts = []
        if self.collect_error:
            parts.append(f"collecting {self.module} failed in MicroPython:\n{self.collect_error}")
        for t in self.failures:
            parts.append(f"{self.module}::{t.name} {t.status.upper()} in MicroPython:\n{t.tb}")
        if self.summary is None and self.result is not None:
            parts.append(f"the MicroPython run did not finish (rc={self.result.returncode}):\n"
                         f"{self.result.stderr}\nlast output:\n{self.result.stdout[-3000:]}")
        return "\n".join(parts)

    def assert_all_passed(self, min_tests: int = 1) -> None:
        """pytest-friendly: raise AssertionError carrying the MicroPython tracebacks."""
        if not self.ok:
            raise AssertionError(self.format_failures())
        if len(self.passed) < min_tests:
            raise AssertionError(f"{self.module}: only {len(self.passed)} test(s) passed, expected >= {min_tests}")


def run_pytest_style(module_host_path: str | os.PathLike, mounts: Mapping[str | os.PathLike, str] | None = None,
                     paths: Sequence[str] = (), timeout: float = 120, select: Iterable[str] | None = None,
                     heap: int | None = None) -> TestReport:
    """Run every test_* function of one module inside one MicroPython VM.

    The module file is copied to /_mptest_mod/ (first on sys.path) and imported by
    mptest.py, which prints one machine-readable line per test; select filters by
    substring of the test name.
    """
    mod = Path(module_host_path).resolve()
    if not mod.is_file() or mod.suffix != ".py":
        raise FileNotFoundError(f"test module {mod} is not a .py file")
    all_mounts = {str(MPTEST): f"{_MPTEST_VM_DIR}/mptest.py", str(mod): f"{_TESTMOD_VM_DIR}/{mod.name}"}
    all_mounts.update({str(k): v for k, v in (mounts or {}).items()})
    sel = json.dumps(list(select)) if select else "None"
    code = (f"import mptest\nawait mptest.main({json.dumps(mod.stem)}, {sel})\n")
    res = run(code=code, mounts=all_mounts, paths=[_TESTMOD_VM_DIR, _MPTEST_VM_DIR, *paths],
              timeout=timeout, heap=heap)
    report = TestReport(module=mod.name, result=res)
    for line in res.stdout.splitlines():
        if not line.startswith(_PREFIX):
            continue
        try:
            rec = json.loads(line[len(_PREFIX):])
        except ValueError:
            continue
        kind = rec.pop("kind", None)
        if kind == "test":
            report.tests.append(TestOutcome(rec["name"], rec["status"], rec.get("ms", 0), rec.get("tb", "")))
        elif kind == "collect_error":
            report.collect_error = rec.get("tb", "")
        elif kind == "summary":
            report.summary = rec
    return report
