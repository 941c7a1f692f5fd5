"""The protocol's contract constants folded into each module at build time.

protocol.codes (and the const() integers of protocol.rules) define every numeric code once, for
the gateway and the devices. MicroPython's const() folds a name only inside the module that
defines it, so a board that imported protocol.codes would intern every name it defines, for as
long as it runs, and hold one global per imported name in each importer: 112 names and about
3 KiB on a pole. The build does what a cross-module const() would: in each module it compiles,
every use of such a name becomes its value and the import goes, so a board never imports the
definitions. A definitions module the firmware still imports for its functions (protocol.rules)
loses the folded definitions too; one it no longer imports (protocol.codes) stays whole, for a
script at the console. Lines stay where they were (tracebacks of a `--lines` build point at the
source).

What cannot be folded safely is refused with BuildFailed naming the file and the name: a name
rebound or used as a parameter, `import protocol.codes`, a star import, and a module that
re-exports a folded name to another (import it from protocol.codes there).
"""
from __future__ import annotations

import ast
from pathlib import Path

from .errors import BuildFailed

CONST_MODULES = ("protocol.codes", "protocol.rules")
"""Modules whose module-level `NAME = const(int)` definitions are folded into their importers."""


def table(proto_root: Path) -> dict[str, dict[str, int]]:
    """{module: {name: value}} of the const() integers CONST_MODULES define (an expression of
    literals and names defined before it, as const() allows)."""
    out: dict[str, dict[str, int]] = {}
    for mod in CONST_MODULES:
        path = proto_root / (mod.split(".", 1)[1] + ".py")
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        known = {k: v for vals in out.values() for k, v in vals.items()}
        defs: dict[str, int] = {}
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "const" and len(node.value.args) == 1):
                v = _evaluate(node.value.args[0], {**known, **defs}, path)
                defs[node.targets[0].id] = v
        out[mod] = defs
    return out


def _evaluate(node: ast.expr, names: dict[str, int], path: Path) -> int:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id not in names:
            raise BuildFailed(f"const() of {sub.id!r}, which is not a constant defined before it",
                              where=str(path))
        if not isinstance(sub, (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop,
                                ast.Load)):
            raise BuildFailed("const() of something other than integer arithmetic", where=str(path))
    v = eval(compile(ast.Expression(node), str(path), "eval"), {"__builtins__": {}}, dict(names))  # noqa: S307
    if type(v) is not int:
        raise BuildFailed(f"const() must be an integer, got {v!r}", where=str(path))
    return v


def fold(text: str, module: str, consts: dict[str, dict[str, int]], shown: str,
         drop: bool = False) -> tuple[str, set[str]]:
    """The module's source with every folded name replaced by its value, and the names the module
    no longer binds (what it imported from CONST_MODULES; with drop, a CONST_MODULE's own
    definitions go too, its uses of them folded)."""
    tree = ast.parse(text, shown)
    direct: dict[str, int] = dict(consts.get(module, {})) if drop else {}  # local name -> value
    aliases: dict[str, str] = {}     # local name of a const module -> module (from protocol import codes)
    edits: list[tuple[int, int, int, int, str]] = []
    defined = set()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in direct and isinstance(node.value, ast.Call)):
            defined.add(node)
            edits.append(_span(node) + ("pass" + "\n" * (node.end_lineno - node.lineno),))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in consts:
                    raise BuildFailed(f"`import {a.name}`: import its names, or `from protocol import "
                                      f"{a.name.rsplit('.', 1)[1]}`", where=shown)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            keep = []
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if node.module in consts:
                    if a.name == "*":
                        raise BuildFailed(f"`from {node.module} import *` cannot be folded", where=shown)
                    if a.name in consts[node.module]:
                        direct[a.asname or a.name] = consts[node.module][a.name]
                        continue
                elif full in consts:
                    aliases[a.asname or a.name] = full
                    if _only_folded(tree, a.asname or a.name, consts[full]):
                        continue
                keep.append(a)
            if len(keep) != len(node.names):
                edits.append(_span(node) + (_import_text(node, keep),))
    if not direct and not aliases:
        return text, set()
    inside = {id(n) for d in defined for n in ast.walk(d)}
    for node in ast.walk(tree):
        if id(node) in inside:
            continue
        if isinstance(node, ast.Name) and node.id in direct:
            if not isinstance(node.ctx, ast.Load):
                raise BuildFailed(f"{node.id} is bound here but is a constant of the protocol", where=shown)
            edits.append(_span(node) + (_literal(direct[node.id]),))
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
              and node.attr in consts[aliases[node.value.id]]):
            if not isinstance(node.ctx, ast.Load):
                raise BuildFailed(f"assigns {node.value.id}.{node.attr}, a constant of the protocol",
                                  where=shown)
            edits.append(_span(node) + (_literal(consts[aliases[node.value.id]][node.attr]),))
        elif isinstance(node, ast.arg) and node.arg in direct:
            raise BuildFailed(f"parameter {node.arg} shadows a constant of the protocol", where=shown)
        elif isinstance(node, (ast.Global, ast.Nonlocal)) and set(node.names) & set(direct):
            raise BuildFailed(f"declares {sorted(set(node.names) & set(direct))[0]} global", where=shown)
    return _apply(text, edits), set(direct)


def _imports(text: str, shown: str) -> set[str]:
    """The modules a source imports (`from a.b import c` counts a.b and a.b.c)."""
    out = set()
    for node in ast.walk(ast.parse(text, shown)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _only_folded(tree: ast.AST, alias: str, defs: dict[str, int]) -> bool:
    """Whether every use of a const module's local name is an attribute it folds."""
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == alias:
            up = parents.get(node)
            if not (isinstance(up, ast.Attribute) and up.attr in defs and isinstance(up.ctx, ast.Load)):
                return False
    return True


def _span(node: ast.AST) -> tuple[int, int, int, int]:
    return node.lineno, node.col_offset, node.end_lineno, node.end_col_offset


def _literal(v: int) -> str:
    return "(%d)" % v


def _import_text(node: ast.ImportFrom, keep: list[ast.alias]) -> str:
    """What stands where the import stood: the names it still imports, else `pass`; as many lines."""
    lines = node.end_lineno - node.lineno
    if not keep:
        return "pass" + "\n" * lines
    names = ", ".join(a.name + (" as " + a.asname if a.asname else "") for a in keep)
    return "from %s import %s%s" % (node.module, names, "\n" * lines)


def _apply(text: str, edits: list[tuple[int, int, int, int, str]]) -> str:
    """Replace spans (1-based lines, UTF-8 byte columns, as ast gives them) from the last to the first."""
    lines = [ln.encode("utf-8") for ln in text.splitlines(keepends=True)]
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    data = b"".join(lines)
    for l0, c0, l1, c1, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        a, b = offsets[l0 - 1] + c0, offsets[l1 - 1] + c1
        data = data[:a] + new.encode("utf-8") + data[b:]
    return data.decode("utf-8")


def fold_modules(sources: dict[str, tuple[str, str]], consts: dict[str, dict[str, int]]) -> dict[str, str]:
    """{module: (source, shown)} -> {module: folded source}, refusing a module that takes a folded
    name from another module that only had it from CONST_MODULES (after folding it has none):
    every such use is listed in one BuildFailed."""
    folded, gone = {}, {}
    for mod, (text, shown) in sources.items():
        if mod not in consts:
            folded[mod], gone[mod] = fold(text, mod, consts, shown)
    used = set().union(*(_imports(folded[m], sources[m][1]) for m in folded))
    for mod, (text, shown) in sources.items():
        if mod in consts:
            folded[mod], gone[mod] = fold(text, mod, consts, shown, drop=mod in used)
    bad: list[tuple[str, str]] = []
    for mod, (text, shown) in sources.items():
        tree = ast.parse(text, shown)
        local: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    if node.module not in consts and a.name in gone.get(node.module, ()):
                        bad.append((shown, f"imports {a.name} from {node.module}"))
                    if f"{node.module}.{a.name}" in gone:
                        local[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in local
                    and node.attr in gone[local[node.value.id]]):
                bad.append((shown, f"uses {node.value.id}.{node.attr}"))
    if bad:
        raise BuildFailed("; ".join(f"{w} {what}" for w, what in bad) + ": a protocol constant another module "
                          "only imported", where=bad[0][0], hint="import it from protocol.codes (or protocol.rules)")
    return folded
