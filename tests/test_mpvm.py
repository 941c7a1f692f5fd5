"""mpvm: code really runs in MicroPython (WebAssembly port), with exit codes and a test runner."""
from __future__ import annotations

import textwrap

import pytest

from sim import mpvm

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]


def test_runs_in_micropython_not_cpython():
    r = mpvm.run(code="import sys; print(sys.implementation.name, sys.implementation._mpy & 0xff)")
    assert r.ok, r.stderr
    name, mpy = r.stdout.split()
    assert name == "micropython" and int(mpy) >= 6


def test_top_level_await_and_asyncio():
    r = mpvm.run(code=textwrap.dedent("""
        import asyncio
        async def f(x):
            await asyncio.sleep_ms(1)
            return x * 2
        print(await asyncio.gather(f(1), f(2)))
    """))
    assert r.ok, r.stderr
    assert r.stdout.strip() == "[2, 4]"


def test_uncaught_exception_gives_rc1_and_traceback():
    r = mpvm.run(code="def f():\n    raise ValueError('boom')\nf()\n")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "ValueError: boom" in r.stderr
    with pytest.raises(mpvm.MpvmError, match="ValueError: boom"):
        r.check()


def test_sys_exit_code_passes_through():
    assert mpvm.run(code="import sys; sys.exit(7)").returncode == 7
    assert mpvm.run(code="import sys; sys.exit()").returncode == 0


def test_timeout_even_for_busy_loop():
    r = mpvm.run(code="while True:\n    pass\n", timeout=0.5)
    assert r.timed_out and "timeout" in r.stderr


def test_mounts_paths_and_main_file(tmp_path):
    pkg = tmp_path / "lib" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 41\n")
    (tmp_path / "app.py").write_text("import pkg\nprint(pkg.VALUE + 1)\n")
    r = mpvm.run(file="/app/app.py", mounts={tmp_path / "lib": "/lib2", tmp_path / "app.py": "/app/app.py"},
                 paths=["/lib2"])
    assert r.ok, r.stderr
    assert r.stdout.strip() == "42"


def test_usage_errors():
    with pytest.raises(ValueError):
        mpvm.run()
    with pytest.raises(FileNotFoundError):
        mpvm.run(code="1", mounts={"/nonexistent/x": "/x"})
    assert mpvm.run(file="/nope.py").returncode == 2


def test_unavailable_is_typed(monkeypatch, tmp_path):
    monkeypatch.setenv("MPVM_NODE", str(tmp_path / "no-node"))
    assert not mpvm.node_available()
    with pytest.raises(mpvm.MpvmUnavailable, match="./dev setup"):
        mpvm.run(code="1")


def test_run_pytest_style_reports_each_test(tmp_path):
    mod = tmp_path / "test_sample_mp.py"
    mod.write_text(textwrap.dedent("""
        import asyncio
        def test_ok():
            assert 1 + 1 == 2
        async def test_async_ok():
            await asyncio.sleep_ms(1)
        def test_fail():
            assert [1] == [2], "lists differ"
        def test_error():
            {}["nokey"]
        def test_skip():
            import mptest
            mptest.skip("not on this port")
        def helper():
            raise RuntimeError("not a test")
    """))
    rep = mpvm.run_pytest_style(mod)
    status = {t.name: t.status for t in rep.tests}
    assert status == {"test_ok": "passed", "test_async_ok": "passed", "test_fail": "failed",
                      "test_error": "error", "test_skip": "skipped"}
    assert rep.summary["passed"] == 2 and rep.summary["failed"] == 1 and rep.summary["errors"] == 1
    assert not rep.ok
    msg = rep.format_failures()
    assert "AssertionError: lists differ" in msg and "KeyError" in msg and "test_sample_mp.py\", line" in msg
    with pytest.raises(AssertionError):
        rep.assert_all_passed()
    sel = mpvm.run_pytest_style(mod, select=["_ok"])
    assert sorted(t.name for t in sel.tests) == ["test_async_ok", "test_ok"]
    sel.assert_all_passed(min_tests=2)


def test_run_pytest_style_collect_error(tmp_path):
    mod = tmp_path / "test_broken_mp.py"
    mod.write_text("import does_not_exist\n")
    rep = mpvm.run_pytest_style(mod)
    assert not rep.ok and "does_not_exist" in rep.collect_error
