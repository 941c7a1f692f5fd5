"""park-device as a client of the gateway: no gateway imports, the `park-gateway device` CLI as the only way in,
and the firmware's config checks loaded without sys.path or sys.modules edits."""
from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest

from park_device import errors, provision
from park_device.fwload import FirmwareModules
from park_device.registrar import GatewayRegistry, entry, write_private

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "park_device"
GW = str(Path(sys.executable).with_name("park-gateway"))


def test_park_device_has_no_gateway_import_and_no_path_edits():
    for f in sorted(TOOL.glob("*.py")):
        text = f.read_text()
        assert not re.search(r"^\s*(import gateway|from gateway[ .])", text, re.M), f.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(n == "gateway" or n.startswith("gateway.") for n in names), f.name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys":
                assert node.attr not in ("path", "modules"), f"{f.name}:{node.lineno}: sys.{node.attr}"


def test_firmware_checks_load_without_touching_sys_path_or_sys_modules(monkeypatch):
    import protocol  # noqa: F401  (installed; park-device finds the board's copy through it)
    monkeypatch.setitem(sys.modules, "common", types.ModuleType("common"))  # someone else's `common`
    path, modules = list(sys.path), set(sys.modules)
    provision.validate_host(provision.compose("c001", "container_sensor", "stadtpark", None, {}))
    with pytest.raises(errors.BadConfig) as e:
        provision.validate_host(provision.compose("c001", "container_sensor", "stadtpark", None,
                                                  provision.parse_set(["link.baud=7"])))
    assert e.value.where == "link.baud"
    assert sys.path == path and set(sys.modules) == modules
    mods = FirmwareModules()
    curve = mods.load("light_pole.curve")
    assert curve.__name__ == "light_pole.curve" and curve.duty(10000) > curve.duty(100) > 0
    assert mods.load("common.ticks") is mods.modules["common.ticks"]   # its import resolved to the same copy
    schema = mods.load("light_pole.app").App.SCHEMA
    assert provision.app_defaults("light_pole") == {k: v[1] for k, v in schema.items()} and "debounce_ms" in schema


def test_merge_keeps_board_values_this_run_does_not_set():
    board = {"hold": 45, "debounce_ms": 55, "base": 20}
    app, kept, over = provision.merge_app({"hold": 30}, {"hold": 30}, board, {"base": 20, "debounce_ms": 50}, False)
    assert app == {"hold": 30, "debounce_ms": 55, "base": 20} and kept == ["debounce_ms"] and over == ["hold"]
    app, kept, over = provision.merge_app({"comps": 4}, {}, {"comps": 3}, {}, False)
    assert app == {"comps": 3} and kept == ["comps"] and over == []   # the template yields to the board
    app, kept, over = provision.merge_app({"hold": 30}, {"hold": 30}, board, {"base": 20, "debounce_ms": 50}, True)
    assert app == {"hold": 30} and kept == [] and over == ["debounce_ms", "hold"]
    assert provision.merge_app({"a": 1}, {}, None, {}, False) == ({"a": 1}, [], [])


def _gw(*args):
    cp = subprocess.run([GW, "device", *map(str, args), "--json"], capture_output=True, text=True, timeout=60)
    return cp.returncode, (json.loads(cp.stdout) if cp.stdout.strip() else None), cp.stderr


def _entry(tmp_path, did, key):
    p = tmp_path / f"{did}.json"
    write_private(str(p), entry(did, "light_pole", "stadtpark", key, None))
    return p


def test_gateway_cli_import_refuses_a_missing_or_foreign_registry(tmp_path):
    f = _entry(tmp_path, "l001", b"\x01" * 32)
    reg = tmp_path / "registry.sqlite"
    rc, doc, err = _gw("import", f, "--registry", reg)
    assert rc == 1 and doc["error"]["code"] == "no_registry" and "--create" in doc["error"]["message"] and not reg.exists()
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    for bad in (other, tmp_path / "l001.json"):
        rc, doc, err = _gw("import", f, "--registry", bad)
        assert rc == 1 and doc["error"]["code"] == "not_a_registry" and "Traceback" not in err, (bad, doc, err)
    assert other.read_bytes() == before
    rc, doc, err = _gw("import", f, "--registry", reg, "--create")
    assert rc == 0 and doc["added"] == ["l001"], err


def test_gateway_cli_answers_provisioning_lookups_with_reasons(tmp_path):
    reg = tmp_path / "registry.sqlite"
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    assert _gw("import", _entry(tmp_path, "l001", k1), "--registry", reg, "--create")[0] == 0
    rc, doc, _ = _gw("l001", "--registry", reg)
    assert rc == 0 and doc["id"] == "l001" and doc["registered"] and "key" not in json.dumps(doc)
    rc, doc, _ = _gw("l009", "--registry", reg)
    assert rc == 1 and doc["error"]["code"] == "unknown_device"
    rc, doc, _ = _gw("import", _entry(tmp_path, "l001", k2), "--registry", reg, "--check")
    assert rc == 0 and doc["check"] == [{"id": "l001", "registered": True, "same_key": False, "key_owner": None}]
    assert k2.hex() not in json.dumps(doc) and k1.hex() not in json.dumps(doc)
    rc, doc, _ = _gw("import", _entry(tmp_path, "l002", k1), "--registry", reg, "--check")
    assert doc["check"] == [{"id": "l002", "registered": False, "same_key": False, "key_owner": "l001"}]
    rc, doc, _ = _gw("import", _entry(tmp_path, "l002", k1), "--registry", reg)
    assert rc == 1 and doc["error"]["code"] == "duplicate_key"
    rc, doc, _ = _gw("import", _entry(tmp_path, "l001", k2), "--registry", reg)
    assert rc == 1 and doc["error"]["code"] == "duplicate_device"
    rc, doc, _ = _gw("export", "--registry", reg)
    assert rc == 0 and [d["id"] for d in doc["devices"]] == ["l001"]


def test_the_registrar_maps_gateway_answers_to_typed_errors(tmp_path, monkeypatch):
    reg = tmp_path / "registry.sqlite"
    gw = GatewayRegistry(str(reg))
    assert gw.exe == GW
    with pytest.raises(errors.RegistryError, match="no registry") as e:
        gw.lookup("l001")
    assert "--registry path" in e.value.hint
    created = GatewayRegistry(str(reg), create=True)
    assert created.lookup("l001") is None and created.check(str(_entry(tmp_path, "l001", b"\x01" * 32))) == {}
    created.import_file(str(_entry(tmp_path, "l001", b"\x01" * 32)), replace=False)
    with pytest.raises(errors.KeyConflict, match="already belongs to device l001"):
        gw.import_file(str(_entry(tmp_path, "l002", b"\x01" * 32)), replace=False)
    slow = tmp_path / "slow-gateway"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    os.chmod(slow, 0o755)
    with pytest.raises(errors.RegistryError, match="did not answer within 1 s"):
        GatewayRegistry(str(reg), timeout=1, exe=str(slow)).lookup("l001")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.RegistryError, match="park-gateway is not installed") as e:
        GatewayRegistry(str(reg))
    assert "--import-file" in e.value.hint
