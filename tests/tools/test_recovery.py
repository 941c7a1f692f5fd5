"""A technician's slips on virtual boards: another role's identity, a board in a reboot loop, a changed config
(issue 9 items 14 and 16), and the gateway's registry named wrongly (item 15)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_harness import run_cli
from park_device import errors
from park_device.board import Board

PARK_DEVICE = str(Path(sys.executable).with_name("park-device"))
PROVISION = ["provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark"]


def _files(port):
    with Board.open(port, timeout=10) as b:
        return b.hashes(["/config.json", "/key.bin", "/main.py", "/lib/light_pole/app.mpy"])


def test_provision_refuses_a_role_the_board_does_not_run(light_board, tmp_path, capsys):
    before = _files(light_board.console_pty)
    rc, out, err = run_cli(capsys, "provision", "--id", "c001", "--role", "container_sensor", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--import-file", tmp_path / "c.json", "--json")
    doc = json.loads(out)
    assert rc == errors.WrongRole.exit_status and doc["error"]["code"] == "wrong_role"
    assert "runs the light_pole firmware, not container_sensor" in doc["error"]["message"]
    assert "deploy --role container_sensor" in doc["error"]["hint"]
    assert _files(light_board.console_pty) == before and before["/config.json"] is None
    assert not (tmp_path / "c.json").exists()


def _looping_flash(deployed_flash, tmp_path) -> Path:
    """The light_pole firmware provisioned as a container sensor, as `provision` used to allow: it reboots."""
    flash = tmp_path / "looping"
    shutil.copytree(deployed_flash, flash)
    cfg = {"id": "c001", "site": "stadtpark", "role": "container_sensor", "link": {"uart": 1, "tx": 17, "rx": 16},
           "rt": {}, "pins": {"trig": 5, "echo": 18}, "app": {}}
    (flash / "config.json").write_text(json.dumps(cfg))
    (flash / "key.bin").write_bytes(bytes(range(32)))
    return flash


def test_a_board_that_never_stays_at_its_repl_ends_within_the_timeout(vboard_factory, tmp_path):
    flash = tmp_path / "reset-loop"
    flash.mkdir()
    (flash / "main.py").write_text("print('booting')\nimport machine\nmachine.reset()\n")
    b = vboard_factory(flash_dir=flash)
    t0 = time.monotonic()
    try:  # this waited forever before (mpremote restarts its timeout at every byte)
        cp = subprocess.run([PARK_DEVICE, "deploy", "--force", "--role", "container_sensor", "-p", b.console_pty,
                             "--timeout", "3", "--json"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("deploy --timeout 3 on a rebooting board was still waiting after 60 s")
    took = time.monotonic() - t0
    doc = json.loads(cp.stdout)
    assert cp.returncode == errors.NoAnswer.exit_status and doc["error"]["code"] == "no_answer", cp.stdout
    assert "reboot loop" in doc["error"]["message"] and "park-device recover" in doc["error"]["hint"]
    assert took < 30 and "Traceback" not in cp.stderr


def test_recover_brings_a_boot_looping_board_back_to_a_known_state(vboard_factory, deployed_flash, tmp_path, capsys):
    b = vboard_factory(flash_dir=_looping_flash(deployed_flash, tmp_path))
    rc, out, err = run_cli(capsys, "recover", "-p", b.console_pty, "--timeout", "15", "--json")
    doc = json.loads(out)
    assert rc == 0, out + err
    assert doc["main_py"] == "removed" and doc["idle_after_reset"] is True and doc["restarted"] is True
    assert doc["firmware"] == ["light_pole"] and doc["identity"]["role"] == "container_sensor"
    assert doc["has_key"] is True and doc["attempts"] >= 1
    b.sync_flash()
    assert not (b.flash_path / "main.py").exists() and (b.flash_path / "key.bin").exists()
    # the board answers like any other now: deploy the role it was meant to have, provision it again
    rc, out, err = run_cli(capsys, "deploy", "--role", "container_sensor", "--force", "-p", b.console_pty, "--json")
    assert rc == 0, out + err
    assert "/main.py" in json.loads(out)["uploaded"]
    rc, out, err = run_cli(capsys, "provision", "--id", "c001", "--role", "container_sensor", "--site", "stadtpark",
                           "-p", b.console_pty, "--import-file", tmp_path / "c001.json", "--json")
    assert rc == 0 and json.loads(out)["key"] == "kept", out + err
    rc, out, err = run_cli(capsys, "recover", "-p", b.console_pty, "--no-restart", "--json")
    assert rc == 0 and json.loads(out)["main_py"] == "removed" and json.loads(out)["restarted"] is False


def _gateway_sets(port, **values):
    """What the runtime does on `park-gateway config set`: validate against App.SCHEMA, save the app section."""
    with Board.open(port, timeout=10) as b:
        b.exec("from common import config as C\nfrom light_pole.app import App\ndev = C.load()\n"
               f"C.save_app(C.PATH, dev, C.validate(App.SCHEMA, {values!r}, base=C.validate(App.SCHEMA, dev.app)))")


def _app(board):
    return json.loads(board.read_flash("config.json"))["app"]


def test_provisioning_again_keeps_what_the_gateway_set(light_board, tmp_path, capsys):
    args = [*PROVISION, "-p", light_board.console_pty, "--import-file", tmp_path / "l001.json",
            "--set", "app.hold=30"]
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0, err
    _gateway_sets(light_board.console_pty, debounce_ms=55)
    rc, out, err = run_cli(capsys, *args, "--json")
    res = json.loads(out)
    assert rc == 0 and res["changed"] == [] and res["config"]["kept"] == {"debounce_ms": 55}, out + err
    assert _app(light_board)["debounce_ms"] == 55 and _app(light_board)["hold"] == 30
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0 and "nothing changed" in out and "debounce_ms=55" in out
    # a value this run sets differently is named, and only --reset-config overwrites it
    _gateway_sets(light_board.console_pty, hold=45)
    rc, out, err = run_cli(capsys, *args, "--json")
    doc = json.loads(out)
    assert rc == errors.ConfigConflict.exit_status and doc["error"]["code"] == "config_conflict"
    assert "app.hold: 45 -> 30" in doc["error"]["message"] and "--reset-config" in doc["error"]["hint"]
    assert _app(light_board)["hold"] == 45 and _app(light_board)["debounce_ms"] == 55
    rc, out, err = run_cli(capsys, *args, "--reset-config", "--json")
    res = json.loads(out)
    assert rc == 0 and res["changed"] == ["/config.json"] and "hold" in res["config"]["overwritten"], out + err
    assert _app(light_board) == {"hold": 30}


def test_a_registry_path_that_is_wrong_is_one_clear_error_and_creates_nothing(light_board, tmp_path, capsys):
    before = _files(light_board.console_pty)
    not_a_registry = tmp_path / "notes.txt"
    not_a_registry.write_text("this is not a registry\n")
    rc, out, err = run_cli(capsys, *PROVISION, "-p", light_board.console_pty, "--registry", not_a_registry, "--json")
    doc = json.loads(out)
    assert rc == errors.RegistryError.exit_status and doc["error"]["code"] == "registry_error"
    assert "is not a park-gateway registry" in doc["error"]["message"] and "DatabaseError" not in out + err
    assert not_a_registry.read_text() == "this is not a registry\n"
    typo = tmp_path / "registy.sqlite"
    rc, out, err = run_cli(capsys, *PROVISION, "-p", light_board.console_pty, "--registry", typo)
    assert rc == errors.RegistryError.exit_status and "no registry at" in err and "Traceback" not in err
    assert not typo.exists() and _files(light_board.console_pty) == before
    rc, out, err = run_cli(capsys, *PROVISION, "-p", light_board.console_pty, "--registry", typo,
                           "--create-registry", "--json")
    assert rc == 0, out + err
    assert json.loads(out)["registered"]["how"] == "registry" and typo.exists()
    rc, out, err = run_cli(capsys, *PROVISION, "-p", light_board.console_pty, "--registry", typo, "--json")
    assert rc == 0 and json.loads(out)["changed"] == [], out + err  # registered with the same key: nothing to do


def test_monitor_honours_the_timeout_on_a_silent_board(blank_board, capsys):
    t0 = time.monotonic()
    rc, out, err = run_cli(capsys, "monitor", "-p", blank_board.console_pty, "--timeout", "2", "--json")
    doc = json.loads(out.strip().splitlines()[-1])
    assert rc == errors.NoAnswer.exit_status and doc["error"]["code"] == "no_answer"
    assert "no output" in doc["error"]["message"] and time.monotonic() - t0 < 10
