"""park_device.consts: the protocol's constants folded into each module a board gets."""
from __future__ import annotations

from pathlib import Path

import pytest

from park_device import build, consts, errors
from protocol import codes, rules
from sim import mpvm

ROOT = Path(__file__).resolve().parents[2]
TABLE = consts.table(ROOT / "protocol")


def test_the_table_is_every_integer_constant_of_the_protocol():
    want = {n: getattr(codes, n) for n in dir(codes) if n.isupper()}
    assert TABLE["protocol.codes"] == want
    assert TABLE["protocol.rules"]["LIGHT_BASE"] == rules.LIGHT_BASE and "ID_RULE" not in TABLE["protocol.rules"]


def test_names_become_values_and_imports_go_with_lines_kept():
    src = ("from protocol.codes import (E_BUSY,\n"
           "                            MAX_CONFIG_KEY as MAX_KEY)\n"
           "from protocol import cbor, codes, rules\n"
           "def f(x):\n"
           "    return (E_BUSY, codes.F_LAMP.bit_length(), -MAX_KEY, rules.valid_id(x), rules.SITE_MAX)\n")
    out, gone = consts.fold(src, "m", TABLE, "m.py")
    assert out.count("\n") == src.count("\n")
    assert "E_BUSY" not in out and "MAX_KEY" not in out and "codes" not in out and "SITE_MAX" not in out
    assert "from protocol import cbor, rules" in out  # rules.valid_id is a function: rules stays
    assert gone == {"E_BUSY", "MAX_KEY"}
    ns = {}
    exec(out.replace("from protocol import cbor, rules", "from protocol import rules"), ns)
    assert ns["f"]("a1") == (codes.E_BUSY, codes.F_LAMP.bit_length(), -codes.MAX_CONFIG_KEY, True, rules.SITE_MAX)


def test_a_constant_module_the_firmware_imports_loses_its_definitions_and_folds_its_own_uses():
    text = (ROOT / "protocol" / "rules.py").read_text()
    out, gone = consts.fold(text, "protocol.rules", TABLE, "protocol/rules.py", drop=True)
    assert "SITE_MAX" not in out and "MAX_KID" not in out and "LIGHT_BASE" not in out
    assert {"SITE_MAX", "LIGHT_BASE", "MAX_KID"} <= gone
    ns = {}
    exec(out, ns)
    assert ns["valid_site"]("a" * 32) and not ns["valid_site"]("a" * 33)
    assert ns["valid_id"]("a" * 8) and not ns["valid_id"]("a" * 9)


@pytest.mark.parametrize("src, why", [
    ("from protocol.codes import E_BUSY\nE_BUSY = 3\n", "bound here"),
    ("from protocol.codes import E_BUSY\ndef f(E_BUSY):\n    pass\n", "parameter E_BUSY"),
    ("import protocol.codes\n", "import protocol.codes"),
    ("from protocol.codes import *\n", "cannot be folded"),
    ("from protocol import codes\ncodes.E_BUSY = 1\n", "assigns codes.E_BUSY"),
])
def test_what_cannot_be_folded_is_refused_by_name(src, why):
    with pytest.raises(errors.BuildFailed, match=why) as e:
        consts.fold(src, "m", TABLE, "firmware/x/m.py")
    assert e.value.where == "firmware/x/m.py"


def test_a_module_that_takes_a_constant_from_another_is_refused():
    mods = {"a": ("from protocol.codes import F_LAMP\n", "a.py"),
            "b": ("from a import F_LAMP\n", "b.py"),
            "c": ("from protocol import cose\nx = cose.UP\n", "c.py"),
            "protocol.cose": ("from protocol.codes import UP\n", "protocol/cose.py")}
    with pytest.raises(errors.BuildFailed) as e:
        consts.fold_modules(mods, TABLE)
    assert "b.py imports F_LAMP from a" in e.value.message and "c.py uses cose.UP" in e.value.message
    assert "protocol.codes" in e.value.hint


@pytest.mark.parametrize("role", ["container_sensor", "light_pole", "locker"])
def test_a_built_board_never_imports_the_protocols_constants(role, tmp_path):
    """Every module of the role imports on MicroPython from the build's .mpy files, and neither
    protocol.codes nor any name it defines is on the board afterwards."""
    lib = tmp_path / "lib"
    mods = []
    for a in build.build(role):
        if a.dest.startswith("/lib/"):
            p = tmp_path / a.dest[1:]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(a.data)
            mods.append(build.module_name(a.dest))
    skip = {"common.main", "common.selftest", "common.ble", "common.wifi",  # a console, a booted runtime, radios
            "protocol.codes"}  # on the board, for the console
    code = ("import sys, micropython\n"
            f"for m in {sorted(set(mods) - skip)!r}:\n    __import__(m)\n"
            "print('codes' , 'protocol.codes' in sys.modules)\nmicropython.qstr_info(1)\n"
            # compiled after the listing: a name in this program's text is interned when it is compiled
            "exec('from protocol.codes import E' + '_BUSY as a, LS' + '_MANUAL as b\\nprint(\\'console\\', a, b)')\n")
    r = mpvm.run(code=code, mounts={lib: "/lib", ROOT / "sim" / "fake_machine.py": "/vm/machine.py"},
                 paths=["/vm", "/lib"], timeout=120)
    r.check()
    assert "codes False" in r.stdout
    interned = {ln[2:-1] for ln in r.stdout.splitlines() if ln.startswith("Q(")}
    assert sorted(interned & {"CAP_LOCK", "E_BUSY", "F_LAMP", "ACC_FORGED", "LS_MANUAL", "UR_FLASH", "LIGHT_BASE"}) == []
    assert f"console {codes.E_BUSY} {codes.LS_MANUAL}" in r.stdout  # the board's protocol.codes stays whole
