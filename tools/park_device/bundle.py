"""bundle: one role's firmware as a signed update bundle for `park-gateway update import`.

The files are what `deploy` puts under /lib (the role's manifests, compiled with mpy-cross),
named relative to /lib (`common/runtime.mpy`), in manifest order; /main.py is not part of an
app image (it only chooses the slot and starts it). The bundle's version must be the one the
firmware reports (its App.FW or common.VERSION), so the gateway can tell the new version
from the old when the device comes back.

`--runtime FIRMWARE.bin` builds a kind-1 bundle instead: a MicroPython app image for the
next OTA partition of boards with CAP_OTA_IMAGE (docs/updates.md).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from protocol import bundle as pbundle
from protocol import codes

from .build import build, mpy_cross_version
from .errors import BadImage, DeviceToolError
from .release import load_private
from .roles import ROLES, check_role, firmware_root


class BundleFailed(DeviceToolError):
    """The bundle cannot be built as asked (a version, a floor, the output file)."""
    code, exit_status = "bundle_failed", 33


_FW = re.compile(r"^\s*(?:FW|VERSION)\s*=\s*(\d+)", re.M)


def declared_fw(role: str, fw_root: Path | None = None) -> int | None:
    """The version the firmware reports in hello: the role's App.FW, else common.VERSION."""
    root = Path(fw_root or firmware_root())
    for p in (root / role / "app.py", root / "common" / "__init__.py"):
        try:
            m = _FW.search(p.read_text())
        except OSError:
            continue
        if m:
            return int(m.group(1))
    return None


def _version(text: str | None, what: str, default: int | None = None) -> int:
    if text is None:
        return default
    try:
        return pbundle.version_number(text)
    except ValueError as e:
        raise BundleFailed(f"{what}: {e}") from None


def make_bundle(ui, role: str, version: str, key_path: str, out: str, *, floor: str | None = None,
                min_runtime: str | None = None, schema: int = 1, fw_root: Path | None = None,
                force: bool = False) -> tuple[str, dict]:
    check_role(role)
    fw = _version(version, "--version")
    fl = _version(floor, "--floor", 0)
    if fl > fw:
        raise BundleFailed(f"--floor {floor} is above --version {version}",
                           hint="the floor is the oldest version a device may be offered after this one")
    declared = declared_fw(role, fw_root)
    if declared is not None and declared != fw:
        raise BundleFailed(f"the {role} firmware reports {pbundle.version_text(declared)}, not {version}",
                           hint=f"set FW in firmware/{role}/app.py (or common VERSION) to {fw}")
    if os.path.exists(out) and not force:
        raise BundleFailed(f"{out} exists", where=out, hint="choose another -o FILE or add --force")
    load_private(key_path)
    cross = mpy_cross_version()
    mr = _version(min_runtime, "--min-runtime", _FIRST_RUNTIME.get(cross[0], 0))
    with ui.progress("compile", 1) as bar:
        def tick(i, n, name):
            bar.total = n
            bar.set(i, name)
        arts = build(role, fw_root=fw_root, progress=tick)
    files = {a.dest[len("/lib/"):]: a.data for a in arts if a.dest.startswith("/lib/")}
    header = pbundle.ImageHeader(ROLES[role][0], fw, cross[0], mr, schema, fl, [(p, 0, b"") for p in files])
    try:
        image = pbundle.build_image(header, files)
    except pbundle.ImageError as e:
        raise BundleFailed(str(e.why)) from None
    return _write(key_path, out, force, image, 0, role, fw, cross[0], mr, schema, fl,
                  {"role": role, "version": version, "files": len(files)},
                  f"bundle {out}: {role} {version}, {len(files)} files")


def _write(key_path, out, force, image, kind, role, fw, mpy, mr, schema, fl, result, summary):
    """Sign `image` with the release key and write the bundle to `out` (whole or not at all)."""
    if os.path.exists(out) and not force:
        raise BundleFailed(f"{out} exists", where=out, hint="choose another -o FILE or add --force")
    key = load_private(key_path)
    try:
        data = pbundle.sign(key, image, kind, role, fw, mpy, mr, schema, fl)
    except (pbundle.ImageError, pbundle.BundleError) as e:
        raise BundleFailed(str(e.why)) from None
    tmp = out + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except OSError as e:
        raise BundleFailed(f"cannot write the bundle: {e.strerror}", where=out) from None
    kid = pbundle.key_id(pbundle.public_raw(key.public_key())).hex()
    result = dict(result, file=out, fw=fw, floor=fl, mpy=mpy, min_runtime=mr, schema=schema,
                  image_bytes=len(image), bundle_bytes=len(data), sha256=hashlib.sha256(image).hexdigest(),
                  key_id=kid)
    return (f"{summary}, image {len(image)} B, signed by {kid}", result)


# the first MicroPython release whose loader reads bytecode .mpy files of each major version
_FIRST_RUNTIME = {6: 11900}


class ImageTooBig(DeviceToolError):
    """A runtime image larger than an update may be (SPEC 10: size 1..UPD_SIZE_MAX)."""
    code, exit_status = "image_too_big", 34


class BadVersion(DeviceToolError):
    """A version that is not X.Y.Z, or a MicroPython too old for the role's .mpy files."""
    code, exit_status = "bad_version", 35


_APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t, the first bytes of an ESP-IDF app's first segment
_PART_TABLE_AT = 0x8000 - 0x1000  # where a whole-flash .bin (from 0x1000) holds its partition table
_PART_TABLE_MAGIC = b"\xaa\x50"


def esp_app_image(path: str) -> tuple[bytes, dict]:
    """The bytes of an ESP-IDF app image (what goes into an OTA partition) and what its header says.

    Parsed with esptool's own image loader; a whole-flash .bin (bootloader, partition table
    and app, flashed at 0x1000) is refused, since an OTA partition takes only the app.
    """
    from esptool.bin_image import LoadFirmwareImage
    from .flash import ESP_IMAGE_MAGIC, chip_defs
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImage(f"cannot read {path}: {e.strerror}", where=path) from None
    hint = "use the MicroPython app image for an OTA partition (micropython.bin in the build folder)"
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise BadImage(f"{path} is not an ESP32 app image (no 0xE9 header)", where=path, hint=hint)
    if len(data) > codes.UPD_SIZE_MAX:
        raise ImageTooBig(f"{path} has {len(data)} bytes; an update image has at most {codes.UPD_SIZE_MAX}",
                          where=path)
    if data[_PART_TABLE_AT:_PART_TABLE_AT + 2] == _PART_TABLE_MAGIC:
        raise BadImage(f"{path} is a whole-flash image (bootloader and partition table), not an app image",
                       where=path, hint=hint)
    cid = int.from_bytes(data[12:14], "little")
    cls = chip_defs().get(cid)
    if cls is None:
        raise BadImage(f"{path} is built for an unknown chip id {cid}", where=path)
    try:
        img = LoadFirmwareImage(cls.CHIP_NAME.lower().replace("-", ""), data)
    except Exception as e:  # esptool's FatalError and what a truncated or hostile file provokes
        raise BadImage(f"{path} is not a whole ESP32 app image: {e or type(e).__name__}", where=path,
                       hint=hint) from None
    if img.checksum != img.calculate_checksum():
        raise BadImage(f"{path}: the image checksum does not match its segments", where=path, hint=hint)
    if getattr(img, "append_digest", False) and img.stored_digest != img.calc_digest:
        raise BadImage(f"{path}: the image's SHA-256 does not match its contents", where=path, hint=hint)
    first = img.segments[0].data if img.segments else b""
    if len(first) < 256 or int.from_bytes(first[:4], "little") != _APP_DESC_MAGIC:
        raise BadImage(f"{path} has no ESP-IDF app description (a bootloader, not an app?)", where=path,
                       hint=hint)
    return data, {"chip": cls.CHIP_NAME, "app_version": _cstr(first[16:48]), "project": _cstr(first[48:80]),
                  "idf": _cstr(first[112:144])}


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def make_runtime_bundle(ui, role: str, image: str, mp_version: str, key_path: str, out: str, *,
                        floor: str | None = None, force: bool = False) -> tuple[str, dict]:
    """Kind 1: a MicroPython app image for the next OTA partition of the role's boards (CAP_OTA_IMAGE).

    The meta names the role it was tested with (the gateway plans and the device accepts
    bundles per role); fw is the MicroPython version, mpy the .mpy version it loads (the
    one the device's files are compiled for); min_runtime is that version itself.
    """
    check_role(role)
    try:
        fw = pbundle.version_number(mp_version)
    except ValueError as e:
        raise BadVersion(f"--mp-version: {e}", hint="the MicroPython release of the image, e.g. 1.27.0") from None
    fl = _version(floor, "--floor", 0)
    mpy = max((m for m, first in _FIRST_RUNTIME.items() if fw >= first), default=None)
    if mpy is None:
        raise BadVersion(f"MicroPython {mp_version} cannot load the role's .mpy files",
                         hint="oldest: " + ", ".join(f"{pbundle.version_text(v)} (.mpy v{m})"
                                                     for m, v in _FIRST_RUNTIME.items()))
    if fl > fw:
        raise BundleFailed(f"--floor {floor} is above --mp-version {mp_version}",
                           hint="the floor is the oldest MicroPython a device may be offered after this one")
    data, info = esp_app_image(image)
    return _write(key_path, out, force, data, 1, role, fw, mpy, fw, 1, fl,
                  dict(info, role=role, version=mp_version, kind="runtime", image=image),
                  f"runtime bundle {out}: MicroPython {mp_version} for {role} ({info['chip']})")
