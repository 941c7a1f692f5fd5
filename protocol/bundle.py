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
from protocol.codes import ROLE_CONTAINER_SENSOR, ROLE_LOCKER, UPD_SIZE_MAX
from protocol.messages import ROLE_IDS, ROLES as ROLE_NAMES

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


# ---------------------------------------------------------------- signed bundles (host only)
#
# bundle = CBOR {"meta": bstr .cbor meta, "image": bstr, "sig": bstr .size 64}
# meta   = {"format": 1, "kind", "role", "fw", "mpy", "min_runtime", "schema", "floor", "size", "sha",
#           "created", "key"}
# sig    = Ed25519(release key, SIG_CONTEXT || meta bytes)
# docs/updates.md says why the gateway, not the device, checks this signature.

BUNDLE_FORMAT = 1
SIG_CONTEXT = b"park-bundle-v1"
KEY_ID_LEN = 8
_META_INTS = ("format", "kind", "fw", "mpy", "min_runtime", "schema", "floor", "size", "created")
_META_KEYS = frozenset(_META_INTS + ("role", "sha", "key"))


class BundleError(ValueError):
    """A bundle that is not released by the city or not intact. `code` is a stable word
    (malformed, unknown_key, signature, digest, mismatch, key_file); `why` says what exactly."""

    def __init__(self, code, why):
        super().__init__("%s: %s" % (code, why))
        self.code = code
        self.why = why


class Bundle:
    """A verified bundle: `meta` (dict), `image` (bytes), `header` (ImageHeader of an app image, else None)."""

    __slots__ = ("meta", "meta_bytes", "image", "sig", "header")

    def __init__(self, meta, meta_bytes, image, sig, header):
        self.meta, self.meta_bytes, self.image, self.sig, self.header = meta, meta_bytes, image, sig, header

    @property
    def key_id(self):
        return self.meta["key"]

    @property
    def sha(self):
        return self.meta["sha"]

    def describe(self):
        """The meta for people and JSON: digests in hex, versions as X.Y.Z."""
        m = dict(self.meta)
        m["sha"] = m["sha"].hex()
        m["key"] = m["key"].hex()
        for k in ("fw", "floor", "min_runtime"):
            m[k + "_text"] = version_text(m[k])
        if self.header is not None:
            m["files"] = [[p, n, d.hex()] for p, n, d in self.header.files]
        return m


def version_number(text):
    """"1.3.0" -> 10300 (M*10000+m*100+p, the protocol's fw field); ValueError names the rule."""
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or not all(int(p) < 100 for p in parts[1:]) \
            or int(parts[0]) > 99:
        raise ValueError("version %r must be X.Y.Z with X 0-99 and Y, Z 0-99" % (text,))
    return int(parts[0]) * 10000 + int(parts[1]) * 100 + int(parts[2])


def version_text(n):
    return "%d.%d.%d" % (n // 10000, n // 100 % 100, n % 100)


def key_id(public_raw):
    """The release key's id: the first 8 bytes of SHA-256 over its 32 raw bytes."""
    return hashlib.sha256(bytes(public_raw)).digest()[:KEY_ID_LEN]


def public_raw(public_key):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def new_release_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.generate()


def private_pem(private_key):
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    return private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_pem(public_key):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path):
    """An Ed25519 private key from a PEM file; the key itself is never in an error message."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    data = _read_key_file(path)
    try:
        k = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BundleError("key_file", "%s is not a PEM Ed25519 private key" % path) from None
    if not isinstance(k, Ed25519PrivateKey):
        raise BundleError("key_file", "%s is not an Ed25519 key" % path)
    return k


def load_public_key(path):
    """An Ed25519 public key from a PEM file (PATH.pub of `park-device release-key new`) or 64 hex characters."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    data = _read_key_file(path).strip()
    try:
        if len(data) == 64:
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode("ascii")))
        k = load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise BundleError("key_file", "%s is not a PEM Ed25519 public key or 64 hex characters" % path) from None
    if not isinstance(k, Ed25519PublicKey):
        raise BundleError("key_file", "%s is not an Ed25519 key" % path)
    return k


def _read_key_file(path):
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError as e:
        raise BundleError("key_file", "cannot read %s: %s" % (path, e.strerror)) from None


def sign(private_key, image, kind, role, fw, mpy, min_runtime, schema, floor, created=None):
    """A bundle's bytes: `image` with its meta, signed by the release key. An app image (kind 0)
    must agree with its own header (role, versions), checked here as the gateway will."""
    import time
    if created is None:
        created = int(time.time())
    meta = {"format": BUNDLE_FORMAT, "kind": kind, "role": role, "fw": fw, "mpy": mpy,
            "min_runtime": min_runtime, "schema": schema, "floor": floor, "size": len(image),
            "sha": hashlib.sha256(image).digest(), "created": created,
            "key": key_id(public_raw(private_key.public_key()))}
    _check_meta(meta)
    if kind == 0:
        _agree(meta, read_header(image))
    meta_bytes = cbor.dumps(meta)
    sig = private_key.sign(SIG_CONTEXT + meta_bytes)
    return cbor.dumps({"meta": meta_bytes, "image": bytes(image), "sig": sig})


def verify(data, release_keys):
    """Open a bundle: signed by one of `release_keys` (public key objects), image intact and as described.

    Raises BundleError with the reason; returns a Bundle.
    """
    try:
        outer = cbor.loads(bytes(data))
    except Exception as e:  # the codec's typed errors and anything a hostile file provokes
        raise BundleError("malformed", "not a CBOR bundle: %s" % e) from None
    if type(outer) is not dict or set(outer) != {"meta", "image", "sig"} \
            or not all(type(outer[k]) is bytes for k in outer):
        raise BundleError("malformed", "a bundle is a map of meta, image and sig, each a byte string")
    meta_bytes, image, sig = outer["meta"], outer["image"], outer["sig"]
    if len(sig) != 64:
        raise BundleError("malformed", "sig has %d bytes, an Ed25519 signature has 64" % len(sig))
    try:
        meta = cbor.loads(meta_bytes)
    except Exception as e:  # noqa: BLE001 - as above
        raise BundleError("malformed", "meta is not CBOR: %s" % e) from None
    _check_meta(meta)
    keys = {key_id(public_raw(k)): k for k in release_keys}
    k = keys.get(meta["key"])
    if k is None:
        raise BundleError("unknown_key", "signed with key %s, which is not a release key of this gateway (%s)"
                          % (meta["key"].hex(), ", ".join(sorted(i.hex() for i in keys)) or "none configured"))
    from cryptography.exceptions import InvalidSignature
    try:
        k.verify(sig, SIG_CONTEXT + meta_bytes)
    except InvalidSignature:
        raise BundleError("signature", "the signature of key %s does not match the meta" % meta["key"].hex()) \
            from None
    if len(image) != meta["size"]:
        raise BundleError("digest", "image has %d bytes, the signed meta says %d" % (len(image), meta["size"]))
    if hashlib.sha256(image).digest() != meta["sha"]:
        raise BundleError("digest", "image does not match the signed SHA-256")
    header = None
    if meta["kind"] == 0:
        try:
            header = read_header(image)
        except ImageError as e:
            raise BundleError("malformed", "image: %s" % e.why) from None
        _agree(meta, header)
    return Bundle(meta, meta_bytes, image, sig, header)


def _check_meta(m):
    if type(m) is not dict or set(m) != _META_KEYS:
        raise BundleError("malformed", "meta must have exactly the keys %s" % ", ".join(sorted(_META_KEYS)))
    for k in _META_INTS:
        if type(m[k]) is not int or m[k] < 0:
            raise BundleError("malformed", "meta %s must be a non-negative integer" % k)
    if m["format"] != BUNDLE_FORMAT:
        raise BundleError("malformed", "bundle format %d (this gateway reads %d)" % (m["format"], BUNDLE_FORMAT))
    if m["kind"] not in (0, 1):
        raise BundleError("malformed", "kind %d is neither 0 (app) nor 1 (runtime)" % m["kind"])
    if m["role"] not in ROLE_IDS:
        raise BundleError("malformed", "role %r is not one of %s" % (m["role"], ", ".join(ROLE_IDS)))
    if type(m["sha"]) is not bytes or len(m["sha"]) != 32 or type(m["key"]) is not bytes \
            or len(m["key"]) != KEY_ID_LEN:
        raise BundleError("malformed", "meta sha must be 32 bytes and key %d bytes" % KEY_ID_LEN)
    if not 0 < m["size"] <= UPD_SIZE_MAX:
        raise BundleError("malformed", "size %d is not 1..%d" % (m["size"], UPD_SIZE_MAX))
    if m["fw"] > 999999 or m["floor"] > m["fw"]:
        raise BundleError("malformed", "fw %d / floor %d: the floor must not be above the version"
                          % (m["fw"], m["floor"]))


def _agree(meta, h):
    for k in ("fw", "mpy", "min_runtime", "schema", "floor"):
        if getattr(h, k) != meta[k]:
            raise BundleError("mismatch", "meta %s %d differs from the image header's %d" % (k, meta[k], getattr(h, k)))
    if ROLE_NAMES.get(h.role) != meta["role"]:
        raise BundleError("mismatch", "meta role %s differs from the image header's role %d" % (meta["role"], h.role))
