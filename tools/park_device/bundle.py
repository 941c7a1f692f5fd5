"""bundle: one role's firmware as a signed update bundle for `park-gateway update import`.

The files are what `deploy` puts under /lib (the role's manifests, compiled with mpy-cross),
named relative to /lib (`common/runtime.mpy`), in manifest order; /main.py is not part of an
app image (it only chooses the slot and starts it). The bundle's version must be the one the
firmware reports (its App.FW or common.VERSION), so the gateway can tell the new version
from the old when the device comes back.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from protocol import bundle as pbundle

from .build import build, mpy_cross_version
from .errors import DeviceToolError
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
    key = load_private(key_path)
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
        data = pbundle.sign(key, image, 0, role, fw, cross[0], mr, schema, fl)
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
    result = {"file": out, "role": role, "version": version, "fw": fw, "floor": fl, "mpy": cross[0],
              "min_runtime": mr, "schema": schema, "files": len(files), "image_bytes": len(image),
              "bundle_bytes": len(data), "sha256": hashlib.sha256(image).hexdigest(), "key_id": kid}
    return (f"bundle {out}: {role} {version}, {len(files)} files, image {len(image)} B, signed by {kid}", result)


# the first MicroPython release whose loader reads bytecode .mpy files of each major version
_FIRST_RUNTIME = {6: 11900}
