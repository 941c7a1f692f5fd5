"""park-device release-key and bundle, with the real mpy-cross: a bundle the gateway can verify, built from the
manifests; every refusal coded; the private key never printed and never readable by others."""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from cli_harness import run_cli
from park_device.build import build
from protocol import bundle

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


@pytest.fixture
def key(tmp_path, capsys):
    path = tmp_path / "release.pem"
    rc, out, err = run_cli(capsys, "release-key", "new", path, "--json")
    assert rc == 0
    return path, json.loads(out)


def test_release_key_new_writes_an_owner_only_key_and_prints_only_its_id(tmp_path, capsys):
    path = tmp_path / "release.pem"
    rc, out, err = run_cli(capsys, "release-key", "new", path)
    assert rc == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pub = bundle.load_public_key(str(path) + ".pub")
    kid = bundle.key_id(bundle.public_raw(pub)).hex()
    assert kid in out
    raw_priv = bundle.load_private_key(path).private_bytes_raw()
    for secret in (path.read_text(), raw_priv.hex(), raw_priv.hex().upper()):
        assert secret not in out + err
    rc, out, err = run_cli(capsys, "release-key", "new", path, "--json")
    assert rc == 32 and json.loads(out)["error"]["code"] == "key_file"


def test_a_bundle_built_from_the_manifests_verifies_with_the_public_key(tmp_path, capsys, key):
    path, k = key
    out_file = tmp_path / "lp.bundle"
    rc, out, err = run_cli(capsys, "bundle", "--role", "light_pole", "--version", "1.0.0", "--key", path,
                           "-o", out_file, "--json")
    assert rc == 0, out + err
    doc = json.loads(out)
    b = bundle.verify(out_file.read_bytes(), [bundle.load_public_key(str(path) + ".pub")])
    assert b.meta["role"] == "light_pole" and b.meta["fw"] == 10000 and b.meta["key"].hex() == k["key_id"]
    assert doc["image_bytes"] == len(b.image) and doc["files"] == len(b.header.files)
    want = {a.dest[len("/lib/"):]: a.data for a in build("light_pole") if a.dest.startswith("/lib/")}
    assert [p for p, _, _ in b.header.files] == list(want)
    assert "common/runtime.mpy" in want and "light_pole/app.mpy" in want and "protocol/codec.mpy" in want
    off = b.header.body_offset
    for p, n, _ in b.header.files:
        assert b.image[off:off + n] == want[p]
        off += n


def test_the_bundle_version_must_be_what_the_firmware_reports(tmp_path, capsys, key, monkeypatch):
    path, _ = key
    rc, out, _ = run_cli(capsys, "bundle", "--role", "locker", "--version", "1.3.0", "--key", path,
                         "-o", tmp_path / "k.bundle", "--json")
    assert rc == 33 and "reports 1.0.0" in json.loads(out)["error"]["message"]
    fw = tmp_path / "fw"
    shutil.copytree(FIRMWARE, fw)
    app = fw / "locker" / "app.py"
    app.write_text(app.read_text().replace("FW = 10000", "FW = 10300"))
    monkeypatch.setenv("PARK_FIRMWARE_DIR", str(fw))
    rc, out, _ = run_cli(capsys, "bundle", "--role", "locker", "--version", "1.3.0", "--floor", "1.1.0",
                         "--key", path, "-o", tmp_path / "k.bundle", "--json")
    assert rc == 0, out
    b = bundle.verify((tmp_path / "k.bundle").read_bytes(), [bundle.load_public_key(str(path) + ".pub")])
    assert (b.meta["fw"], b.meta["floor"], b.header.role) == (10300, 10100, 3)


@pytest.mark.parametrize("extra, code, words", [
    (["--floor", "2.0.0"], "bundle_failed", "above"),
    (["--version", "1.0"], "bundle_failed", "X.Y.Z"),
    (["--role", "bench"], "unknown_role", "bench"),
])
def test_bad_arguments_are_refused_with_a_code(tmp_path, capsys, key, extra, code, words):
    path, _ = key
    args = {"--role": "light_pole", "--version": "1.0.0"}
    args.update(dict(zip(extra[::2], extra[1::2])))
    argv = ["bundle", "--key", path, "-o", tmp_path / "x.bundle", "--json"] + [x for kv in args.items() for x in kv]
    rc, out, _ = run_cli(capsys, *argv)
    err = json.loads(out)["error"]
    assert rc != 0 and err["code"] == code and words in err["message"]
    assert not (tmp_path / "x.bundle").exists()


def test_a_release_key_others_can_read_is_refused(tmp_path, capsys, key):
    path, _ = key
    os.chmod(path, 0o644)
    rc, out, _ = run_cli(capsys, "bundle", "--role", "light_pole", "--version", "1.0.0", "--key", path,
                         "-o", tmp_path / "x.bundle", "--json")
    assert rc == 32 and "readable by others" in json.loads(out)["error"]["message"]
