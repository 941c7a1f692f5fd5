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
