"""Firmware manifests: the one list of what goes onto a board.

Every firmware package has a micropython-lib style ``manifest.py`` (``protocol/manifest.py``,
``firmware/<package>/manifest.py``) with ``metadata()``, ``require()``/``include()`` and
``package()``/``module()``. They are evaluated here as MicroPython's tools/manifestfile.py does,
with only those functions bound, so deploy, the virtual boards, the tests' flash images and a
frozen ESP-IDF build all put exactly the same files onto a board.

    board_files("light_pole") -> [(Path(".../protocol/cbor.py"), "/lib/protocol/cbor.py"), ...,
                                  (Path(".../firmware/common/main.py"), "/main.py")]
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ManifestError, UnknownRole
from .roles import ROLES, firmware_root, protocol_root

ENTRY_SCRIPTS = ("main.py", "boot.py")
"""Top-level modules MicroPython runs by name from the file system: they stay source files in /."""

_VAR = re.compile(r"\$\((\w+)\)")


@dataclass(frozen=True)
class Entry:
    """One file of a manifest: where it is on the host and where MicroPython's manifest puts it."""
    source: Path
    target: str     # as manifestfile.py names it: "common/config.py", "main.py"
    package: str    # the manifest (require name) that listed it
    base: Path      # base_path of the package()/module() call
    call: str       # "package" or "module"

    @property
    def dest(self) -> str:
        """The path on the board's file system."""
        if self.call == "module" and self.target in ENTRY_SCRIPTS:
            return "/" + self.target
        return "/lib/" + self.target


@dataclass
class Manifest:
    """The evaluated manifests of one role, dependencies first."""
    role: str
    entries: list[Entry] = field(default_factory=list)
    metadata: dict[str, dict] = field(default_factory=dict)   # require name -> metadata() arguments
    files: dict[str, Path] = field(default_factory=dict)      # require name -> its manifest.py


class _Options:
    """The ``options`` global of an included manifest (include(path, **kwargs))."""

    def __init__(self, **kwargs) -> None:
        self._kwargs, self._defaults = kwargs, {}

    def defaults(self, **kwargs) -> None:
        self._defaults = kwargs

    def __getattr__(self, name):
        return self._kwargs.get(name, self._defaults.get(name))


class _Reader:
    def __init__(self, role: str, libraries: dict[str, Path], path_vars: dict[str, str]) -> None:
        self.m = Manifest(role)
        self.libraries = libraries
        self.path_vars = path_vars
        self.visited: set[Path] = set()
        self.stack: list[tuple[Path, str]] = []   # (manifest file, require name) being evaluated
        self.targets: dict[str, Path] = {}

    # -- the functions a manifest may call
    def metadata(self, **kwargs) -> None:
        path, name = self.stack[-1]
        if name in self.m.metadata:
            raise ManifestError(f"{path}: metadata() called twice", where=str(path))
        self.m.metadata[name] = dict(kwargs)

    def include(self, manifest_path, **kwargs) -> None:
        if not isinstance(manifest_path, str):
            for p in manifest_path:
                self.include(p, **kwargs)
            return
        path = self._path(manifest_path)
        if path.is_dir():
            path = path / "manifest.py"
        self._run(path, self.stack[-1][1], kwargs)

    def require(self, name, version=None, **kwargs) -> None:
        home = self.libraries.get(name)
        if home is None:
            raise ManifestError(f"require({name!r}): no such park-edge package (known: "
                                f"{', '.join(sorted(self.libraries))})", where=str(self.stack[-1][0]))
        self._run(home / "manifest.py", name, kwargs)

    def package(self, package_path, files=None, base_path=".", opt=None) -> None:
        base = self._path(base_path)
        root = base / package_path
        if files is None:
            if not root.is_dir():
                raise ManifestError(f"package({package_path!r}): {root} is not a directory",
                                    where=str(self.stack[-1][0]))
            files = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
        for f in files:
            self._add(root / f, f"{package_path}/{f}", base, "package")

    def module(self, module_path, base_path=".", opt=None) -> None:
        if not str(module_path).endswith(".py"):
            raise ManifestError(f"module({module_path!r}): must be a .py file", where=str(self.stack[-1][0]))
        base = self._path(base_path)
        self._add(base / module_path, str(module_path), base, "module")

    # -- evaluation
    def _path(self, p: str) -> Path:
        def sub(m: re.Match) -> str:
            if m.group(1) not in self.path_vars:
                raise ManifestError(f"{p}: $({m.group(1)}) is not defined here", where=str(self.stack[-1][0]))
            return self.path_vars[m.group(1)]
        p = _VAR.sub(sub, str(p))
        return Path(os.path.normpath(self.stack[-1][0].parent / p))

    def _add(self, src: Path, target: str, base: Path, call: str) -> None:
        where = str(self.stack[-1][0])
        if not src.is_file():
            raise ManifestError(f"{where}: lists {target}, but {src} does not exist", where=where)
        if target in self.targets and self.targets[target] != src:
            raise ManifestError(f"{where}: {target} is listed twice ({self.targets[target]} and {src})", where=where)
        if target not in self.targets:
            self.targets[target] = src
            self.m.entries.append(Entry(src, target, self.stack[-1][1], base, call))

    def _run(self, path: Path, name: str, kwargs: dict) -> None:
        path = path.resolve()
        if path in self.visited:
            return
        self.visited.add(path)
        try:
            code = compile(path.read_text(), str(path), "exec")
        except OSError as e:
            raise ManifestError(f"cannot read {path}: {e.strerror}", where=str(path)) from None
        except SyntaxError as e:
            raise ManifestError(f"{path}:{e.lineno}: {e.msg}", where=str(path)) from None
        self.m.files.setdefault(name, path)
        # only the manifest functions: a manifest is a list, not a program
        env = {"__builtins__": {}, "metadata": self.metadata, "include": self.include, "require": self.require,
               "package": self.package, "module": self.module, "options": _Options(**kwargs)}
        self.stack.append((path, name))
        try:
            exec(code, env)
        except ManifestError:
            raise
        except Exception as e:
            raise ManifestError(f"{path}: {type(e).__name__}: {e}", where=str(path)) from None
        finally:
            self.stack.pop()


def libraries(fw_root: Path | None = None, proto_root: Path | None = None) -> dict[str, Path]:
    """require() names -> the directory holding that package's manifest.py."""
    fw = Path(fw_root or firmware_root())
    libs = {"protocol": Path(proto_root or protocol_root())}
    if fw.is_dir():
        for d in sorted(fw.iterdir()):
            if (d / "manifest.py").is_file():
                libs[d.name] = d
    return libs


def read(role: str, fw_root: Path | None = None, proto_root: Path | None = None,
         path_vars: dict[str, str] | None = None) -> Manifest:
    """Evaluate firmware/<role>/manifest.py and everything it requires."""
    if role not in ROLES:
        raise UnknownRole(f"unknown role {role!r}", hint="one of: " + ", ".join(ROLES))
    libs = libraries(fw_root, proto_root)
    if role not in libs:
        where = Path(fw_root or firmware_root()) / role / "manifest.py"
        raise ManifestError(f"{where} is missing: cannot build role {role}", where=str(where))
    r = _Reader(role, libs, dict(path_vars or {}))
    r.stack.append((libs[role] / "manifest.py", role))   # so require() errors can name a file
    r._run(libs[role] / "manifest.py", role, {})
    if not any(e.package == role for e in r.m.entries):
        raise ManifestError(f"{r.m.files[role]} lists no files", where=str(r.m.files[role]))
    return r.m


def board_files(role: str, fw_root: Path | None = None, proto_root: Path | None = None) -> list[tuple[Path, str]]:
    """(source file, path on the board) for everything the role needs, in manifest order.

    Packages go under /lib as their .py paths (``/lib/common/config.py``; deploy compiles them to
    .mpy next to that name), entry scripts to the root (``/main.py``).
    """
    return [(e.source, e.dest) for e in read(role, fw_root, proto_root).entries]


FROZEN_PORTS = {
    # port: (what it is, the build command, the port's own manifest)
    "esp32": ("the ESP32 port's own", "make BOARD=ESP32_GENERIC", "$(PORT_DIR)/boards/manifest.py"),
    "webassembly": ("the virtual board's VM (sim/mpvm/frozen.py)", "make VARIANT=pyscript",
                    "$(PORT_DIR)/variants/pyscript/manifest.py"),
}


def frozen_manifest(role: str, fw_root: Path | None = None, proto_root: Path | None = None,
                    port: str = "esp32") -> str:
    """A board manifest.py for FROZEN_MANIFEST of an ESP-IDF build (or of the WebAssembly port the
    virtual boards run): the port's own modules plus the role's packages (entry scripts stay files,
    so /main.py can still be removed on a board)."""
    m = read(role, fw_root, proto_root)
    what, make, own = FROZEN_PORTS[port]
    lines = [f"# Frozen modules of a park-edge {role} board: {what}, then the role's packages.",
             f"# Generated by `park-device manifest --role {role}` from {m.files[role]}.",
             f"# Build: {make} FROZEN_MANIFEST=/path/to/this/manifest.py",
             "# /main.py is not frozen: deploy it as a file (park-device deploy) so a board can always be recovered.",
             f"include({json.dumps(own)})"]
    groups: dict[tuple[str, str, Path], list[str]] = {}
    for e in m.entries:
        if e.call == "module":
            if e.target not in ENTRY_SCRIPTS:
                lines.append(f"module({json.dumps(e.target)}, base_path={json.dumps(str(e.base))})")
            continue
        pkg, _, rel = e.target.partition("/")
        groups.setdefault((e.package, pkg, e.base), []).append(rel)
    for (_, pkg, base), files in groups.items():
        lines.append(f"package(\n    {json.dumps(pkg)},\n    files=(\n" +
                     "".join(f"        {json.dumps(f)},\n" for f in files) +
                     f"    ),\n    base_path={json.dumps(str(base))},\n)")
    return "\n".join(lines) + "\n"


def describe(ui, role: str, fw_root: Path | None = None, proto_root: Path | None = None) -> tuple[str, dict]:
    """`park-device manifest`: the frozen board manifest on stdout (the summary is a comment, so the
    whole output is a valid manifest.py), or with --json the files and packages."""
    m = read(role, fw_root, proto_root)
    text = frozen_manifest(role, fw_root, proto_root)
    repo = Path(fw_root or firmware_root()).resolve().parent
    files = [{"source": _shown(e.source, repo), "dest": e.dest, "package": e.package} for e in m.entries]
    order = list(dict.fromkeys(e.package for e in m.entries))
    packages = [{"name": n, "manifest": _shown(m.files[n], repo), **m.metadata.get(n, {})} for n in order]
    ui.line(text.rstrip("\n"))
    return (f"{'' if ui.json else '# '}manifest: {role}: {len(files)} files from {', '.join(order)}",
            {"role": role, "files": files, "packages": packages, "frozen_manifest": text})


def _shown(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(p)
