"""park-device bundle --runtime (issue 11, "the MicroPython image itself"): a MicroPython app image for the
next OTA partition, checked with esptool's own image parser and signed as a kind-1 bundle the gateway
verifies; a file that is no ESP32 app image, too big, or a bad version is refused with a code."""

import json
import struct

import pytest
from esptool.bin_image import ESP32FirmwareImage, ImageSegment

from cli_harness import run_cli
from protocol import bundle, codes


def app_desc(version=b"v1.27.0", project=b"micropython") -> bytes:
    """esp_app_desc_t, as ESP-IDF puts it at the start of an app's first (DROM) segment."""
    d = struct.pack("<IIII", 0xABCD5432, 0, 0, 0) + version.ljust(32, b"\0") + project.ljust(32, b"\0")
    d += b"12:00:00".ljust(16, b"\0") + b"Nov 30 2026".ljust(16, b"\0") + b"v5.4.1".ljust(32, b"\0")
    return d + bytes(32) + bytes(80)


def esp32_image(path, *, desc=True, code=2000, drom=64):
    """An ESP32 app image written by esptool's own classes: a DROM segment (with the app description)
    and an IRAM segment, checksum and appended SHA-256."""
    img = ESP32FirmwareImage()
    img.entrypoint = 0x40080400
    first = (app_desc() if desc else b"\x5a" * 256) + bytes(drom)
    img.segments = [ImageSegment(0x3F400020, first), ImageSegment(0x40080000, bytes(i & 0xFF for i in range(code)))]
    for s in img.segments:
        s.name = ""
    img.append_digest = True
    img.save(str(path))
    return path


@pytest.fixture
def key(tmp_path, capsys):
    path = tmp_path / "release.pem"
    assert run_cli(capsys, "release-key", "new", path)[0] == 0
    return path


def runtime(capsys, key, image, out, *extra, version="1.27.0", role="light_pole"):
    rc, stdout, err = run_cli(capsys, "bundle", "--role", role, "--runtime", image, "--mp-version", version,
                              "--key", key, "-o", out, "--json", *extra)
    return rc, json.loads(stdout), err


def test_a_runtime_bundle_carries_the_image_as_kind_1_and_verifies(tmp_path, capsys, key):
    image = esp32_image(tmp_path / "micropython.bin")
    rc, doc, err = runtime(capsys, key, image, tmp_path / "mp.bundle")
    assert rc == 0, doc
    b = bundle.verify((tmp_path / "mp.bundle").read_bytes(), [bundle.load_public_key(str(key) + ".pub")])
    assert b.image == image.read_bytes() and b.header is None
    m = b.meta
    assert (m["kind"], m["role"], m["fw"], m["mpy"], m["min_runtime"], m["floor"]) == (
        codes.UK_RUNTIME, "light_pole", 12700, 6, 12700, 0)
    assert doc["kind"] == "runtime" and doc["chip"] == "ESP32" and doc["app_version"] == "v1.27.0"
    assert doc["project"] == "micropython" and doc["image_bytes"] == len(b.image) and doc["fw"] == 12700


def test_the_floor_goes_into_the_signed_meta(tmp_path, capsys, key):
    image = esp32_image(tmp_path / "micropython.bin")
    rc, doc, err = runtime(capsys, key, image, tmp_path / "mp.bundle", "--floor", "1.24.0")
    assert rc == 0, doc
    b = bundle.verify((tmp_path / "mp.bundle").read_bytes(), [bundle.load_public_key(str(key) + ".pub")])
    assert b.meta["floor"] == 12400


def _refused(capsys, key, image, out, **kw):
    rc, doc, err = runtime(capsys, key, image, out, **kw)
    assert not out.exists()
    return rc, doc["error"]


def test_what_is_not_an_esp32_app_image_is_refused_with_bad_image(tmp_path, capsys, key):
    good = esp32_image(tmp_path / "good.bin").read_bytes()
    cases = {
        "garbage": b"MZ this is not a firmware image" * 20,
        "truncated": good[:-100],
        "corrupted": good[:300] + bytes([good[300] ^ 1]) + good[301:],
        "bootloader": esp32_image(tmp_path / "boot.bin", desc=False).read_bytes(),
        "whole_flash": good + bytes(0x7000 - len(good)) + b"\xaa\x50" + bytes(200),
        "empty": b"",
    }
    for name, data in cases.items():
        f = tmp_path / (name + ".bin")
        f.write_bytes(data)
        rc, e = _refused(capsys, key, f, tmp_path / (name + ".bundle"))
        assert (rc, e["code"]) == (26, "bad_image"), name
        assert e["where"] == str(f) and "hint" in e or name == "empty", name
    rc, e = _refused(capsys, key, tmp_path / "missing.bin", tmp_path / "m.bundle")
    assert (rc, e["code"]) == (26, "bad_image") and "cannot read" in e["message"]


def test_an_image_larger_than_an_update_may_be_is_refused_with_image_too_big(tmp_path, capsys, key):
    big = tmp_path / "big.bin"
    big.write_bytes(esp32_image(tmp_path / "g.bin").read_bytes().ljust(codes.UPD_SIZE_MAX + 1, b"\xff"))
    rc, e = _refused(capsys, key, big, tmp_path / "big.bundle")
    assert (rc, e["code"]) == (34, "image_too_big") and str(codes.UPD_SIZE_MAX) in e["message"]


@pytest.mark.parametrize("version", ["1.27", "v1.27.0", "1.27.0-preview", "1.100.0", "1.18.0"])
def test_a_bad_or_too_old_micropython_version_is_refused_with_bad_version(tmp_path, capsys, key, version):
    image = esp32_image(tmp_path / "micropython.bin")
    rc, e = _refused(capsys, key, image, tmp_path / "mp.bundle", version=version)
    assert (rc, e["code"]) == (35, "bad_version") and version in e["message"]


def test_runtime_and_app_flags_do_not_mix(tmp_path, capsys, key):
    image = esp32_image(tmp_path / "micropython.bin")
    out = tmp_path / "x.bundle"
    for argv in (["--runtime", image],
                 ["--runtime", image, "--mp-version", "1.27.0", "--version", "1.0.0"],
                 ["--runtime", image, "--mp-version", "1.27.0", "--min-runtime", "1.22.0"],
                 ["--version", "1.0.0", "--mp-version", "1.27.0"],
                 []):
        rc, stdout, err = run_cli(capsys, "bundle", "--role", "light_pole", "--key", key, "-o", out, "--json", *argv)
        assert (rc, json.loads(stdout)["error"]["code"]) == (33, "bundle_failed"), argv
        assert not out.exists()


def test_an_unknown_role_or_an_existing_output_is_refused(tmp_path, capsys, key):
    image = esp32_image(tmp_path / "micropython.bin")
    rc, doc, err = runtime(capsys, key, image, tmp_path / "x.bundle", role="toaster")
    assert doc["error"]["code"] == "unknown_role"
    out = tmp_path / "exists.bundle"
    out.write_bytes(b"old")
    rc, doc, err = runtime(capsys, key, image, out)
    assert (rc, doc["error"]["code"]) == (33, "bundle_failed") and out.read_bytes() == b"old"


# ---------------------------------------------------------------- through the gateway

def _gwharness():
    """tests/gateway/gwharness.py, loaded from its file (that folder is on the path only for its own tests)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("_gwharness", Path(__file__).parents[1] / "gateway" / "gwharness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pole_flash(dst, key: bytes, ota: bool):
    """A light pole's flash as deploy + provision leave it; ota: with the OTA partition table of the
    virtual board's esp32 emulation (docs/firmware.md)."""
    from park_device.roles import template
    from sim.testbed import write_firmware
    write_firmware(dst, "light_pole")
    t = template("light_pole")
    (dst / "config.json").write_text(json.dumps({"id": "l001", "site": "stadtpark", "role": "light_pole",
                                                 "link": t["link"], "rt": t["rt"], "pins": t["pins"],
                                                 "app": t["app"]}))
    (dst / "key.bin").write_bytes(key)
    if ota:
        (dst / "_esp32").mkdir()
        (dst / "_esp32" / "table.json").write_text('{"ota": 2, "size": 262144}')
    return dst


async def _runtime_rollout(tmp_path, capsys, ota: bool):
    import os
    import secrets

    from gateway.cli import main as gateway_cli
    from gateway.registry import Registry
    from sim import vboard
    from sim.demo import HEALTHY_LAMP_UV, LAMP_CS
    from sim.testbed import vboard_available
    if not vboard_available():
        pytest.skip("virtual boards not installed: run ./dev setup")
    gw = _gwharness()
    key = tmp_path / "release.pem"
    assert run_cli(capsys, "release-key", "new", key)[0] == 0
    image = esp32_image(tmp_path / "micropython.bin", code=20_000)
    rc, doc, err = runtime(capsys, key, image, tmp_path / "mp.bundle")
    assert rc == 0, doc
    dkey = secrets.token_bytes(32)
    # under the pole's Wi-Fi heap budget (89,000 B): a runtime image goes through common.ota_rx and ota_part
    b = vboard.VirtualBoard(realtime=True, flash_dir=_pole_flash(tmp_path / "l001", dkey, ota), name="l001",
                            console_pty=False)
    b.start()
    try:
        b.set_adc(LAMP_CS, uv=HEALTHY_LAMP_UV)
        links = '[[links]]\nname = "l001"\ntype = "url"\nurl = "%s"\nreconnect_max = 1.0\n' % b.link_url
        cfg = gw.parse_links(tmp_path, links, extra='[update]\nrelease_keys = ["%s"]\nlink_rate = 100000\n'
                             'trial_s = 240\nstall_s = 120\n' % (str(key) + ".pub"))
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        with Registry(cfg.registry_path) as reg:
            reg.add("l001", "light_pole", "stadtpark", dkey)
        assert gateway_cli(["--config", cfg.path, "update", "import", str(tmp_path / "mp.bundle"), "--json"]) == 0
        imported = json.loads(capsys.readouterr().out)
        assert imported["kind"] == "runtime"
        async with gw.running(cfg) as d:
            s = d.sessions.by_id["l001"]
            await gw.until(lambda: s.online and s.caps is not None, 60, "the board's hello")
            plan = {"action": "plan", "bundle": imported["bundle"], "site": "stadtpark", "canary": 1}
            if not ota:
                return await d.update(plan), s.caps
            plan = await d.update(plan)
            await gw.until(lambda: d.updates.status(plan["rollout"])["state"] in ("done", "halted"), 400,
                           lambda: "the rollout: %s" % d.updates.status(plan["rollout"]))
            assert b.heap_refusals() == []  # no MemoryError on the way
            return (d.updates.status(plan["rollout"]), json.loads(b.read_flash("/_esp32/otadata.json")),
                    b.read_flash("/_esp32/ota_1.bin")[:image.stat().st_size] == image.read_bytes())
    finally:
        b.stop()


@pytest.mark.micropython
async def test_the_gateway_refuses_to_plan_a_runtime_bundle_for_a_board_without_ota_partitions(tmp_path, capsys):
    from gateway.update import UpdateError
    with pytest.raises(UpdateError) as e:
        await _runtime_rollout(tmp_path, capsys, ota=False)
    assert e.value.code == "kind" and "CAP_OTA_IMAGE" in str(e.value)


@pytest.mark.micropython
async def test_a_runtime_bundle_goes_into_the_next_ota_partition_of_a_virtual_board_and_is_confirmed(tmp_path,
                                                                                                    capsys):
    st, od, written = await _runtime_rollout(tmp_path, capsys, ota=True)
    dev = st["devices"][0]
    assert (dev["device"], dev["canary"]) == ("l001", True)
    assert written and od["running"] == "ota_1" and od["states"]["ota_1"] == "valid"  # the board took it, confirmed
    assert (dev["state"], st["state"]) == ("valid", "done"), st
