"""The app image of an update (SPEC 10): built and read on a host; every malformation is named."""

import hashlib
import struct

import pytest

from protocol import bundle, cbor


def _header(**kw):
    h = dict(role=2, fw=10300, mpy=6, min_runtime=12200, schema=1, floor=10000, files=[("a.mpy", 0, b""), ("d/b.mpy", 0, b"")])
    h.update(kw)
    return bundle.ImageHeader(**h)


CONTENTS = {"a.mpy": b"M\x06" + bytes(100), "d/b.mpy": b"M\x06xyz"}


def test_an_image_reads_back_with_its_files_and_digests():
    image = bundle.build_image(_header(), CONTENTS)
    h = bundle.read_header(image)
    assert (h.role, h.fw, h.mpy, h.min_runtime, h.schema, h.floor) == (2, 10300, 6, 12200, 1, 10000)
    off = h.body_offset
    for path, size, digest in h.files:
        assert image[off:off + size] == CONTENTS[path] and hashlib.sha256(CONTENTS[path]).digest() == digest
        off += size
    assert off == len(image)


@pytest.mark.parametrize("mangle, why", [
    (lambda im: im[:1], "shorter"),
    (lambda im: b"\xff\xff" + im[2:], "runs past"),
    (lambda im: im[:-1] + bytes([im[-1] ^ 1]), "does not match"),
    (lambda im: im + b"\x00", "after the last file"),
])
def test_a_damaged_image_is_refused_with_the_reason(mangle, why):
    with pytest.raises(bundle.ImageError) as e:
        bundle.read_header(mangle(bundle.build_image(_header(), CONTENTS)))
    assert why in e.value.why


@pytest.mark.parametrize("kw, why", [
    (dict(role=4), "role"), (dict(floor=10301), "floor"), (dict(fw=-1), "fw"),
    (dict(files=[("/abs.mpy", 0, b"")]), "path"), (dict(files=[("../x.mpy", 0, b"")]), "path"),
])
def test_a_wrong_header_is_refused_when_built(kw, why):
    contents = {"/abs.mpy": b"", "../x.mpy": b"", **CONTENTS}
    with pytest.raises(bundle.ImageError) as e:
        bundle.build_image(_header(**kw), contents)
    assert why in e.value.why


def test_a_header_of_another_shape_is_refused():
    head = cbor.dumps([2, 2, 1, 6, 0, 1, 0, []])
    with pytest.raises(bundle.ImageError, match="header is not"):
        bundle.read_header(struct.pack(">H", len(head)) + head)
