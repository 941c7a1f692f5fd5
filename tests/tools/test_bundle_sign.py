"""Signed bundles (protocol/bundle.py): only a bundle signed by a configured release key, intact and
as its signed meta describes, opens; everything else is refused with a stable code and the reason."""

import hashlib

import pytest

from protocol import bundle, cbor

FILES = {"common/runtime.mpy": b"M\x06" + bytes(300), "light_pole/app.mpy": b"M\x06pole"}


def _image(fw=10300, floor=10000, role=2):
    h = bundle.ImageHeader(role, fw, 6, 12200, 1, floor, [(p, 0, b"") for p in FILES])
    return bundle.build_image(h, FILES)


def _signed(key, image=None, **kw):
    args = dict(kind=0, role="light_pole", fw=10300, mpy=6, min_runtime=12200, schema=1, floor=10000)
    args.update(kw)
    return bundle.sign(key, _image() if image is None else image, created=1795813800, **args)


@pytest.fixture(scope="module")
def key():
    return bundle.new_release_key()


def test_a_signed_bundle_opens_with_its_release_key_and_describes_itself(key):
    b = bundle.verify(_signed(key), [key.public_key()])
    assert b.meta["role"] == "light_pole" and b.meta["fw"] == 10300 and b.header.fw == 10300
    assert b.key_id == hashlib.sha256(bundle.public_raw(key.public_key())).digest()[:8]
    assert b.sha == hashlib.sha256(b.image).digest() and b.meta["size"] == len(b.image)
    d = b.describe()
    assert d["fw_text"] == "1.3.0" and d["key"] == b.key_id.hex() and d["files"][0][0] == "common/runtime.mpy"


def test_a_bundle_of_another_key_is_not_released_by_this_city(key):
    other = bundle.new_release_key()
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify(_signed(other), [key.public_key()])
    assert e.value.code == "unknown_key" and bundle.key_id(bundle.public_raw(other.public_key())).hex() in e.value.why
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify(_signed(key), [])
    assert e.value.code == "unknown_key" and "none configured" in e.value.why


def _mutate(data, part, fn):
    outer = cbor.loads(data)
    outer[part] = fn(outer[part])
    return cbor.dumps(outer)


def _meta(fn):
    def f(meta_bytes):
        m = cbor.loads(meta_bytes)
        fn(m)
        return cbor.dumps(m)
    return f


@pytest.mark.parametrize("part, fn, code", [
    ("sig", lambda s: bytes([s[0] ^ 1]) + s[1:], "signature"),
    ("meta", _meta(lambda m: m.update(floor=10300)), "signature"),       # a raised floor is not what was signed
    ("meta", _meta(lambda m: m.update(role="locker")), "signature"),
    ("image", lambda im: im[:-1] + bytes([im[-1] ^ 1]), "digest"),
    ("image", lambda im: im + b"\x00", "digest"),
    ("sig", lambda s: s[:63], "malformed"),
])
def test_a_tampered_bundle_is_refused_with_the_reason(key, part, fn, code):
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify(_mutate(_signed(key), part, fn), [key.public_key()])
    assert e.value.code == code


@pytest.mark.parametrize("data", [b"", b"\xff", cbor.dumps([1, 2]), cbor.dumps({"meta": b"", "image": b"", "sig": 1})])
def test_garbage_is_malformed_not_a_crash(key, data):
    with pytest.raises(bundle.BundleError) as e:
        bundle.verify(data, [key.public_key()])
    assert e.value.code == "malformed"


def test_meta_that_disagrees_with_the_image_header_is_never_signed(key):
    with pytest.raises(bundle.BundleError) as e:
        _signed(key, fw=10400, floor=10000)
    assert e.value.code == "mismatch" and "fw" in e.value.why
    with pytest.raises(bundle.BundleError) as e:
        _signed(key, role="locker")
    assert e.value.code == "mismatch" and "role" in e.value.why


def test_a_runtime_image_is_signed_without_an_app_header(key):
    b = bundle.verify(_signed(key, image=b"\xe9" + bytes(4000), kind=1), [key.public_key()])
    assert b.header is None and b.meta["kind"] == 1


def test_key_files_round_trip_and_a_wrong_file_is_named(key, tmp_path):
    (tmp_path / "k.pem").write_bytes(bundle.private_pem(key))
    (tmp_path / "k.pub").write_bytes(bundle.public_pem(key.public_key()))
    (tmp_path / "k.hex").write_text(bundle.public_raw(key.public_key()).hex() + "\n")
    data = _signed(bundle.load_private_key(tmp_path / "k.pem"))
    for pub in ("k.pub", "k.hex"):
        assert bundle.verify(data, [bundle.load_public_key(tmp_path / pub)]).meta["fw"] == 10300
    with pytest.raises(bundle.BundleError) as e:
        bundle.load_public_key(tmp_path / "k.pem")
    assert e.value.code == "key_file" and "k.pem" in e.value.why
    with pytest.raises(bundle.BundleError) as e:
        bundle.load_private_key(tmp_path / "missing.pem")
    assert e.value.code == "key_file"


def test_versions_read_as_the_protocol_numbers_them():
    assert bundle.version_number("1.3.0") == 10300 and bundle.version_text(10300) == "1.3.0"
    for bad in ("1.3", "1.300.0", "a.b.c", "100.0.0"):
        with pytest.raises(ValueError):
            bundle.version_number(bad)
