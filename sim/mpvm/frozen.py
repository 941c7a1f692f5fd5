"""Build the virtual boards' VM with a role's firmware frozen in: the step after `.mpy` files.

A stock ESP32 image imports `.mpy` files from flash into the heap: bytecode and every name
they use live in RAM (docs/firmware.md#footprint). A custom image with the firmware frozen in
(FROZEN_MANIFEST) runs the bytecode from flash and keeps its names in ROM. Building that image
needs ESP-IDF; the same manifest builds the WebAssembly port the virtual boards run, so the
saving is measured on the same boards, with the same budget, before anyone builds for a chip:

    python -m sim.mpvm.frozen --micropython ~/src/micropython --out build/frozen-vm
    python -m benchmarks.bench_footprint --boot --vm build/frozen-vm

Needs a MicroPython source tree at the release the npm package pins (v1.27.0, with
lib/micropython-lib checked out: the pyscript variant freezes parts of it) and Emscripten
(`apt install emscripten`). Debian's Emscripten 3.1.6 predates the port: the build gets two
compatibility fixes, both marked below. Output: <out>/<role>/micropython.{mjs,wasm}; a board
uses it when PARK_VBOARD_VM names the .mjs (sim/vboard/vm_worker.mjs). Never installed.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROLES = ("container_sensor", "light_pole", "locker")

# Emscripten 3.1.6 emits arrow functions of a JS library as bare statements (a syntax error)
_ARROWS = (
    ("mp_js_ticks_ms: () => Date.now() - MP_JS_EPOCH,", "mp_js_ticks_ms: function() { return Date.now() - MP_JS_EPOCH; },"),
    ("mp_js_hook: () => {", "mp_js_hook: function() {"),
    ("mp_js_time_ms: () => Date.now(),", "mp_js_time_ms: function() { return Date.now(); },"),
    ("mp_js_random_u32: () =>\n        globalThis.crypto.getRandomValues(new Uint32Array(1))[0],",
     "mp_js_random_u32: function() {\n        return globalThis.crypto.getRandomValues(new Uint32Array(1))[0];\n    },"),
)
# ... and its ES module looks for CommonJS globals under Node and fetch()es a file path
_ESM_PRELUDE = ('import { createRequire as __park_cr } from "module";\n'
                'import { fileURLToPath as __park_fu } from "url";\n'
                "const require = __park_cr(import.meta.url);\n"
                "const __filename = __park_fu(import.meta.url);\n"
                'const __dirname = require("path").dirname(__filename);\n'
                "const fetch = undefined;\n")


class FrozenBuildError(Exception):
    """The frozen VM could not be built; the message says what is missing."""


def _run(cmd: list[str], cwd: Path, what: str, log: Path) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            cp = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
        except subprocess.TimeoutExpired as e:
            raise FrozenBuildError(f"{what} took more than 30 min (log: {log})") from e
    if cp.returncode:
        raise FrozenBuildError(f"{what} failed with exit status {cp.returncode} (log: {log})")


def _fix_library(port: Path) -> None:
    lib = port / "library.js"
    text = lib.read_text()
    for old, new in _ARROWS:
        text = text.replace(old, new)
    lib.write_text(text)


def _fix_module(mjs: Path) -> None:
    text = mjs.read_text()
    if "createRequire" not in text:  # a newer Emscripten writes its own
        mjs.write_text(_ESM_PRELUDE + text)


def build(micropython: Path, out: Path, roles=ROLES, jobs: int = 2) -> dict[str, Path]:
    """Build one VM per role into out/<role>/; returns {role: path of micropython.mjs}."""
    from park_device.manifest import frozen_manifest

    port = micropython / "ports" / "webassembly"
    if not (port / "Makefile").is_file() or not (micropython / "mpy-cross").is_dir():
        raise FrozenBuildError(f"{micropython} is not a MicroPython source tree (no ports/webassembly)")
    if not (micropython / "lib" / "micropython-lib" / "python-stdlib").is_dir():
        raise FrozenBuildError(f"{micropython}/lib/micropython-lib is empty: the pyscript variant freezes parts of it")
    if shutil.which("emcc") is None:
        raise FrozenBuildError("emcc is not on PATH: apt install emscripten")
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "build.log").resolve()
    log.write_text("")
    _run(["make", "-C", "mpy-cross", f"-j{jobs}"], micropython, "building mpy-cross", log)
    _fix_library(port)
    built = {}
    for role in roles:
        dst = (out / role).resolve()
        dst.mkdir(exist_ok=True)
        manifest = dst / "manifest.py"
        manifest.write_text(frozen_manifest(role, port="webassembly"))
        build_dir = dst / "build"
        _run(["make", "VARIANT=pyscript", f"FROZEN_MANIFEST={manifest}", f"BUILD={build_dir}", f"-j{jobs}"],
             port, f"building the {role} VM", log)
        for name in ("micropython.mjs", "micropython.wasm"):
            shutil.copy2(build_dir / name, dst / name)
        _fix_module(dst / "micropython.mjs")
        built[role] = dst / "micropython.mjs"
    return built


def vm_for(out: Path, role: str) -> Path:
    """The built VM of a role under out (FrozenBuildError if it is not there)."""
    mjs = Path(out) / role / "micropython.mjs"
    if not mjs.is_file() or not mjs.with_suffix(".wasm").is_file():
        raise FrozenBuildError(f"no frozen VM for {role} in {out}: python -m sim.mpvm.frozen --out {out}")
    return mjs.resolve()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--micropython", type=Path, required=True, help="MicroPython source tree (v1.27.0)")
    ap.add_argument("--out", type=Path, default=Path("build/frozen-vm"))
    ap.add_argument("--role", choices=ROLES, action="append")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    version = (a.micropython / "py" / "mpconfig.h")
    if version.is_file():
        m = re.findall(r"#define MICROPY_VERSION_(MAJOR|MINOR|MICRO) \(?(\d+)", version.read_text())
        print("MicroPython", ".".join(v for _, v in m), "from", a.micropython)
    try:
        for role, mjs in build(a.micropython, a.out, a.role or ROLES, a.jobs).items():
            print(f"{role}: {mjs}")
    except FrozenBuildError as e:
        print(f"frozen: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
