"""park-device logic without a board: ports, build, config composition, key files, flash image checks."""
from __future__ import annotations

import json
import os
import stat

import pytest
from serial.tools.list_ports_common import ListPortInfo

from park_device import build, errors, flash, ports, provision
from park_device.deploy import check_mpy, plan
from park_device.roles import ROLES


def _port(dev, vid=None, pid=None, sn=None, loc=None):
    p = ListPortInfo(dev, skip_link_detection=True)
    p.vid, p.pid, p.serial_number, p.location = vid, pid, sn, loc
    return p


INFOS = [_port("/dev/ttyS0"), _port("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001", "1-1.2"),
         _port("/dev/ttyACM0", 0x303A, 0x1001, "F4:12:FA", "1-1.3"), _port("/dev/ttyUSB1", 0x0403, 0x6015, "FT1")]


def test_ports_mark_esp32_bridges_and_keep_usb_details():
    rows = {r["device"]: r for r in ports.scan(INFOS)}
    assert rows["/dev/ttyUSB0"]["esp32"] and rows["/dev/ttyUSB0"]["bridge"] == "Silicon Labs CP210x"
    assert rows["/dev/ttyACM0"]["esp32"] and rows["/dev/ttyACM0"]["serial_number"] == "F4:12:FA"
    assert rows["/dev/ttyUSB0"]["location"] == "1-1.2" and rows["/dev/ttyUSB0"]["vid"] == "10c4"
    assert not rows["/dev/ttyS0"]["esp32"]
    assert not rows["/dev/ttyUSB1"]["esp32"]  # FTDI FT230X (6015) is not on the ESP32 list
    assert [r["device"] for r in ports.scan(INFOS, include_all=False)] == ["/dev/ttyACM0", "/dev/ttyUSB0"]


def test_resolve_picks_by_serial_and_refuses_ambiguity_and_absence():
    assert ports.resolve(None, INFOS, serial_number="0001") == "/dev/ttyUSB0"
    with pytest.raises(errors.AmbiguousPort, match="ttyACM0.*ttyUSB0"):
        ports.resolve(None, INFOS)
    with pytest.raises(errors.NoPort, match="no ESP32"):
        ports.resolve(None, [INFOS[0]])
    with pytest.raises(errors.NoPort, match="serial number 9999"):
        ports.resolve(None, INFOS, serial_number="9999")
    with pytest.raises(errors.NoPort, match="does not exist") as e:
        ports.resolve("/dev/ttyUSB77")
    assert e.value.code == "no_port" and e.value.exit_status == 10
    assert ports.resolve("socket://127.0.0.1:1") == "socket://127.0.0.1:1"


def _manifests(fw, role, common_files, role_files, main=False):
    """firmware/<package>/manifest.py for a test tree (the manifests are what deploy reads)."""
    (fw / "common" / "manifest.py").write_text(
        f'require("protocol")\npackage("common", files={tuple(common_files)!r}, base_path="..")\n'
        + ('module("main.py")\n' if main else ""))
    (fw / role / "manifest.py").write_text(
        f'require("common")\npackage({role!r}, files={tuple(role_files)!r}, base_path="..")\n')


@pytest.mark.parametrize("role", sorted(ROLES))
def test_sources_lay_out_packages_and_leave_out_host_only_code(role, tmp_path):
    fw = tmp_path / "fw"
    for pkg in ("common", role):
        (fw / pkg).mkdir(parents=True)
        (fw / pkg / "__init__.py").write_text("")
        (fw / pkg / "mod.py").write_text("X = 1\n")
    (fw / "common" / "main.py").write_text("from common import runtime\n")
    (fw / "common" / "vmachine").mkdir()
    (fw / "common" / "vmachine" / "machine.py").write_text("")
    _manifests(fw, role, ("__init__.py", "mod.py"), ("__init__.py", "mod.py"), main=True)
    dests = {d: c for _, d, c in build.sources(role, fw_root=fw)}
    assert dests["/lib/common/mod.mpy"] and dests[f"/lib/{role}/mod.mpy"] and dests["/lib/protocol/codec.mpy"]
    assert dests["/main.py"] is False  # MicroPython runs main.py by name: source, not .mpy
    assert not any("vmachine" in d or "cpython" in d or d == "/lib/common/main.mpy" for d in dests)


def test_build_is_deterministic_and_names_a_broken_file(tmp_path):
    a = {x.dest: x.sha256 for x in build.build("light_pole")}
    b = {x.dest: x.sha256 for x in build.build("light_pole")}
    assert a == b and len(a) > 10
    arts = build.build("light_pole")
    mpy = next(x for x in arts if x.dest.endswith(".mpy"))
    assert mpy.data[:2] == b"M\x06"
    fw = tmp_path / "fw"
    for pkg in ("common", "locker"):
        (fw / pkg).mkdir(parents=True)
        (fw / pkg / "__init__.py").write_text("")
    (fw / "locker" / "bad.py").write_text("def f(:\n")
    _manifests(fw, "locker", ("__init__.py",), ("__init__.py", "bad.py"))
    with pytest.raises(errors.BuildFailed) as e:
        build.build("locker", fw_root=fw)
    assert "bad.py" in e.value.where


def test_unknown_role_is_refused():
    with pytest.raises(errors.UnknownRole, match="lamp_post"):
        build.sources("lamp_post")


def test_mpy_version_check_and_plan():
    check_mpy(774, (6, 3))  # the wasm port: v6, sub 3, no native arch
    check_mpy(6 | (3 << 8) | (10 << 10), (6, 1))  # xtensawin board, bytecode-only files still load
    with pytest.raises(errors.MpyMismatch, match="v5"):
        check_mpy(5, (6, 3))
    a1, a2 = build.Artifact("/lib/a.mpy", b"1", "a"), build.Artifact("/lib/b.mpy", b"2", "b")
    todo, same = plan([a1, a2], {"/lib/a.mpy": a1.sha256, "/lib/b.mpy": "0" * 64})
    assert todo == [a2] and same == [a1]


def test_compose_uses_reference_wiring_file_and_sets():
    cfg = provision.compose("l002", "light_pole", "stadtpark", {"app": {"base": 15}},
                            provision.parse_set(["app.hold=30", "pins.motion=26", "link.baud=57600"]))
    assert cfg["id"] == "l002" and cfg["role"] == "light_pole" and cfg["site"] == "stadtpark"
    assert cfg["app"] == {"base": 15, "hold": 30}
    assert cfg["pins"]["motion"] == 26 and cfg["pins"]["lamp"] == 25
    assert cfg["link"]["baud"] == 57600
    with pytest.raises(errors.BadConfig, match="section.name=value"):
        provision.parse_set(["hold=30"])
    with pytest.raises(errors.BadConfig, match="unknown section 'ap'"):
        provision.parse_set(["ap.hold=30"])
    with pytest.raises(errors.BadConfig, match="1-8"):
        provision.compose("lamp-0001", "light_pole", "stadtpark", None, {})
    with pytest.raises(errors.BadConfig, match="--config|config file"):
        provision.compose("l001", "light_pole", "stadtpark", {"id": "l009"}, {})


def test_firmware_config_rules_run_on_the_host_before_the_board_is_touched():
    good = provision.compose("c001", "container_sensor", "stadtpark", None, {})
    provision.validate_host(good)
    bad = provision.compose("c001", "container_sensor", "stadtpark", None, provision.parse_set(["pins.echo=5"]))
    with pytest.raises(errors.BadConfig) as e:
        provision.validate_host(bad)
    assert e.value.where == "pins.trig" or e.value.where == "pins.echo"
    assert "GPIO 5 already used" in e.value.message
    with pytest.raises(errors.BadConfig, match="link.baud"):
        provision.validate_host(provision.compose("c001", "container_sensor", "stadtpark", None,
                                                  provision.parse_set(["link.baud=7"])))


def test_private_files_are_0600_from_creation_and_key_files_must_be_private(tmp_path):
    p = str(tmp_path / "k.json")
    provision.write_private(p, b"secret")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    k = tmp_path / "booking.key"
    k.write_bytes(b"\x01" * 32)
    os.chmod(k, 0o644)
    with pytest.raises(errors.KeyConflict, match="readable by others"):
        provision.read_key_file(str(k))
    os.chmod(k, 0o600)
    assert provision.read_key_file(str(k)) == b"\x01" * 32
    k.write_text("ab" * 32)
    assert provision.read_key_file(str(k)) == b"\xab" * 32
    k.write_text("short")
    with pytest.raises(errors.BadConfig):
        provision.read_key_file(str(k))


def _image(path, chip_id):
    hdr = bytearray(64)
    hdr[0] = 0xE9
    hdr[12:14] = chip_id.to_bytes(2, "little")
    path.write_bytes(bytes(hdr) + b"\xff" * 1024)
    return str(path)


def test_image_header_names_its_chip_and_offset(tmp_path):
    assert flash.image_chip(_image(tmp_path / "a.bin", 0)) == {"chip": "ESP32", "chip_id": 0, "offset": 0x1000,
                                                               "size": 1088}
    assert flash.image_chip(_image(tmp_path / "b.bin", 9))["offset"] == 0
    (tmp_path / "c.uf2").write_bytes(b"UF2\n" + b"\0" * 100)
    with pytest.raises(errors.BadImage, match="not an ESP firmware image"):
        flash.image_chip(str(tmp_path / "c.uf2"))


class FakeRomLoader:
    """Test double for the ESP32 ROM bootloader (no chip here): answers chip detection only."""

    def __init__(self, chip):
        self.chip, self.released, self.written = chip, 0, []

    def detect(self, port, mode, attempts=3):
        self.attempts = attempts
        return self.chip, self.release

    def release(self):
        self.released += 1

    def write(self, ui, port, image, img, baud, erase, mode):
        self.written.append((port, image, img["offset"], erase))


def test_flash_refuses_a_wrong_chip_before_writing(tmp_path, blank_pty):
    from park_device.ui import UI
    rom = FakeRomLoader("ESP32-S3")
    img = _image(tmp_path / "esp32.bin", 0)
    with pytest.raises(errors.WrongChip, match="ESP32-S3.*built for ESP32"):
        flash.flash(UI(quiet=True), blank_pty, img, detect=rom.detect, write=rom.write)
    assert rom.written == [] and rom.released == 1  # reset back to its firmware, nothing written
    rom = FakeRomLoader("ESP32")
    summary, res = flash.flash(UI(quiet=True), blank_pty, img, detect=rom.detect, write=rom.write)
    assert rom.written == [(blank_pty, img, 0x1000, False)] and res["chip"] == "ESP32"
    with pytest.raises(errors.WrongChip, match="--chip"):
        flash.flash(UI(quiet=True), blank_pty, img, chip="esp32s3", detect=rom.detect, write=rom.write)


def test_real_esptool_reports_a_silent_port_as_no_answer(blank_pty):
    with pytest.raises(errors.NoAnswer, match="ROM bootloader"):
        flash.detect_chip(blank_pty, connect_mode="no-reset", attempts=1)


def test_flash_waits_for_the_rom_loader_no_longer_than_its_timeout(tmp_path, blank_pty):
    import time
    from park_device.ui import UI
    img = _image(tmp_path / "esp32.bin", 0)
    rom = FakeRomLoader("ESP32")
    flash.flash(UI(quiet=True), blank_pty, img, timeout=4, detect=rom.detect, write=rom.write)
    assert rom.attempts == 4
    t0 = time.monotonic()
    with pytest.raises(errors.NoAnswer, match="ROM bootloader"):
        flash.flash(UI(quiet=True), blank_pty, img, timeout=1, connect_mode="no-reset")
    assert time.monotonic() - t0 < 5


@pytest.fixture
def blank_pty():
    """A pty nobody answers on: a port with no board behind it."""
    m, s = os.openpty()
    import tty
    tty.setraw(s)
    yield os.ttyname(s)
    os.close(m)
    os.close(s)


def test_cli_json_error_document(capsys):
    from cli_harness import run_cli
    rc, out, err = run_cli(capsys, "deploy", "--role", "tram", "--port", "/dev/null", "--json")
    doc = json.loads(out)
    assert rc == errors.UnknownRole.exit_status
    assert doc == {"ok": False, "command": "deploy",
                   "error": {"code": "unknown_role", "message": "unknown role 'tram'",
                             "hint": "one of: container_sensor, light_pole, locker"}}
    rc, out, err = run_cli(capsys, "selftest", "--port", "/dev/ttyNOPE0")
    assert rc == errors.NoPort.exit_status and "no_port" in err and out == ""
