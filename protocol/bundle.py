"""The app image of a software update (SPEC 10), built and read on a host.

Host only: park-device builds images, the gateway reads their headers. A device
parses the same layout in its own, smaller code (firmware/common), reading the
header from flash, never the whole image into RAM.

    image  = hdr_len (2 bytes, big-endian) || header || the files' bytes, in header order
    header = CBOR [1, role, fw, mpy, min_runtime, schema, floor, [[path, size, sha256], ...]]
"""

import hashlib
import struct

from protocol import cbor
from protocol.codes import ROLE_CONTAINER_SENSOR, ROLE_LOCKER

IMAGE_FORMAT = 1
MAX_PATH = 64


class ImageError(ValueError):
    """An image that does not follow SPEC 10; `why` says what is wrong."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why


class ImageHeader:
    __slots__ = ("role", "fw", "mpy", "min_runtime", "schema", "floor", "files", "body_offset")

    def __init__(self, role, fw, mpy, min_runtime, schema, floor, files, body_offset=0):
        self.role, self.fw, self.mpy = role, fw, mpy
        self.min_runtime, self.schema, self.floor = min_runtime, schema, floor
        self.files = files  # [(path, size, sha256)]
        self.body_offset = body_offset

    def as_list(self):
        return [IMAGE_FORMAT, self.role, self.fw, self.mpy, self.min_runtime, self.schema, self.floor,
                [[p, n, d] for p, n, d in self.files]]


def build_image(header, contents):
    """`contents`: path -> bytes, for every path of header.files (sizes and digests are filled in)."""
    files = []
    for path, _, _ in header.files:
        data = contents[path]
        files.append((path, len(data), hashlib.sha256(data).digest()))
    header = ImageHeader(header.role, header.fw, header.mpy, header.min_runtime, header.schema, header.floor, files)
    _check(header)
    head = cbor.dumps(header.as_list())
    if len(head) > 0xFFFF:
        raise ImageError("header of %d bytes is longer than 65535" % len(head))
    return struct.pack(">H", len(head)) + head + b"".join(contents[p] for p, _, _ in files)


def read_header(image):
    """The header of an image, checked against its body (sizes add up; digests match)."""
    if len(image) < 2:
        raise ImageError("image shorter than its header length")
    (n,) = struct.unpack(">H", image[:2])
    if 2 + n > len(image):
        raise ImageError("header length %d runs past the image" % n)
    try:
        v = cbor.loads(bytes(image[2:2 + n]))
    except Exception as e:  # the portable codec's typed errors and anything a hostile header provokes
        raise ImageError("header is not CBOR: %s" % e) from None
    if type(v) is not list or len(v) != 8 or v[0] != IMAGE_FORMAT:
        raise ImageError("header is not [1, role, fw, mpy, min_runtime, schema, floor, files]")
    files = v[7]
    if type(files) is not list or not files:
        raise ImageError("header lists no files")
    parsed = []
    for f in files:
        if type(f) is not list or len(f) != 3:
            raise ImageError("a file entry is not [path, size, sha256]")
        parsed.append((f[0], f[1], f[2]))
    h = ImageHeader(v[1], v[2], v[3], v[4], v[5], v[6], parsed, 2 + n)
    _check(h)
    off = h.body_offset
    for path, size, digest in h.files:
        if hashlib.sha256(bytes(image[off:off + size])).digest() != digest or off + size > len(image):
            raise ImageError("file %s does not match its SHA-256" % path)
        off += size
    if off != len(image):
        raise ImageError("%d bytes after the last file" % (len(image) - off))
    return h


def _check(h):
    for name in ("fw", "mpy", "min_runtime", "schema", "floor"):
        x = getattr(h, name)
        if type(x) is not int or x < 0:
            raise ImageError("%s must be a non-negative integer" % name)
    if type(h.role) is not int or not ROLE_CONTAINER_SENSOR <= h.role <= ROLE_LOCKER:
        raise ImageError("role must be 1..3")
    if h.floor > h.fw:
        raise ImageError("floor %d is above the image's own version %d" % (h.floor, h.fw))
    seen = set()
    for path, size, digest in h.files:
        if type(path) is not str or not 0 < len(path.encode()) <= MAX_PATH or path.startswith("/") \
                or ".." in path.split("/") or path in seen:
            raise ImageError("bad file path %r" % (path,))
        if type(size) is not int or size < 0 or type(digest) is not bytes or len(digest) != 32:
            raise ImageError("file %s: size or sha256 malformed" % path)
        seen.add(path)
