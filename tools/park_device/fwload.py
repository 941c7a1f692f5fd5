"""Run a firmware module on the host, from the firmware tree park-device deploys.

Why not an import: the firmware imports its siblings by absolute name (``from common.errors
import ConfigError``), and putting firmware/ on sys.path would shadow or be shadowed by other
packages named ``common``. Here each module is executed in a fresh namespace whose ``import``
resolves the firmware's package names to private copies from the given tree; sys.path and
sys.modules stay untouched, and every other import is the ordinary one.
"""
from __future__ import annotations

import builtins
import types
from pathlib import Path

from .errors import BuildFailed
from .roles import firmware_root, protocol_root


class FirmwareModules:
    """Private copies of firmware modules: ``FirmwareModules().load("common.config")``."""

    def __init__(self, fw_root: Path | None = None, proto_root: Path | None = None) -> None:
        fw = Path(fw_root or firmware_root())
        self.roots = {d.name: d for d in fw.iterdir() if (d / "__init__.py").is_file()} if fw.is_dir() else {}
        self.roots["protocol"] = Path(proto_root or protocol_root())
        self.modules: dict[str, types.ModuleType] = {}
        self._builtins = dict(vars(builtins), __import__=self._import)

    def load(self, dotted: str) -> types.ModuleType:
        """The module named ``dotted`` (its parent packages first), executed once per instance."""
        if dotted in self.modules:
            return self.modules[dotted]
        parts = dotted.split(".")
        if parts[0] not in self.roots:
            raise BuildFailed(f"{parts[0]} is not a firmware package", where=dotted)
        if len(parts) > 1:
            self.load(".".join(parts[:-1]))
        base = self.roots[parts[0]].joinpath(*parts[1:])
        path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
        if not path.is_file():
            raise BuildFailed(f"no firmware module {dotted} ({path})", where=str(path))
        mod = types.ModuleType(dotted)
        mod.__file__ = str(path)
        mod.__package__ = dotted if path.name == "__init__.py" else ".".join(parts[:-1])
        mod.__builtins__ = self._builtins  # type: ignore[attr-defined]
        self.modules[dotted] = mod
        try:
            exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
        except BaseException:
            del self.modules[dotted]
            raise
        if len(parts) > 1:
            setattr(self.modules[".".join(parts[:-1])], parts[-1], mod)
        return mod

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            pkg = (globals or {}).get("__package__") or ""
            head = pkg.split(".")[:len(pkg.split(".")) - level + 1]
            name = ".".join(head + ([name] if name else []))
        top = name.split(".")[0]
        if top not in self.roots:
            return builtins.__import__(name, globals, locals, fromlist, level)
        mod = self.load(name)
        if not fromlist:
            return self.modules[top]
        for attr in fromlist:
            if not hasattr(mod, attr) and attr != "*":
                try:
                    self.load(f"{name}.{attr}")
                except BuildFailed:
                    pass
        return mod
