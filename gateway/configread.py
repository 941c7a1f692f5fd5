"""The one config reader: typed TOML values with errors that name file, line and dotted key.

A schema is a dataclass whose fields are declared with `setting(default, lo=,
hi=, choices=)`: the default and the limits are written there once, and
`Reader.section` reads a TOML table into the dataclass's keyword arguments.
Checks that span keys (URLs, files, one value below another) stay in the
schema's own reader code and raise through `Reader.error`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

__all__ = ["ConfigError", "Reader", "setting", "key_lines"]


class ConfigError(ValueError):
    """A config value is wrong; `where` is "file:line", `key` the dotted key."""

    def __init__(self, message: str, key: str = "", file: str = "", line: int | None = None):
        self.message = message
        self.key = key
        self.file = file
        self.line = line
        super().__init__(str(self))

    @property
    def where(self) -> str:
        if self.line:
            return "%s:%d" % (self.file or "<config>", self.line)
        return self.file or "<config>"

    def __str__(self) -> str:
        k = self.key + ": " if self.key else ""
        return "%s: %s%s" % (self.where, k, self.message)


_KIND_NAME = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              list: "an array", dict: "a table"}


def setting(default: Any = dataclasses.MISSING, *, kind: type | None = None, lo=None, hi=None, choices=None,
            required: bool = False, repr: bool = True, default_factory: Any = dataclasses.MISSING):
    """A dataclass field that is also a config key: its default and limits, declared once."""
    if kind is None:
        kind = type(default_factory() if default_factory is not dataclasses.MISSING else default)
    meta = {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "required": required}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta, repr=repr)
    return dataclasses.field(default=default, metadata=meta, repr=repr)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


# ---------------------------------------------------------------- TOML line finder

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=")


def _split_key(s: str) -> list[str]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)", s)
    return [a or b or c for a, b, c in parts]


def key_lines(text: str) -> dict[tuple, int]:
    """Map each dotted key path (array-of-table entries as indexes) to its 1-based line.

    Only what an error message needs: table headers and `key =` lines at the
    start of a line; values inside inline tables map to their key's line.
    """
    out: dict[tuple, int] = {}
    table: tuple = ()
    path: tuple
    counts: dict[tuple, int] = {}
    in_multiline = None
    for n, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        m = _HEADER.match(line)
        if m and not _KEYLINE.match(line):
            path = tuple(_split_key(m.group(2)))
            if m.group(1) == "[[":
                i = counts.get(path, -1) + 1
                counts[path] = i
                path = path + (i,)
            else:
                # a sub-table of the latest array-of-tables entry: [[links]] then [links.x]
                for p in sorted(counts, key=len, reverse=True):
                    if path[: len(p)] == p and len(path) > len(p):
                        path = p + (counts[p],) + path[len(p):]
                        break
            table = path
            out.setdefault(path, n)
            continue
        m = _KEYLINE.match(line)
        if m:
            out.setdefault(table + tuple(_split_key(m.group(1))), n)
            rest = line[m.end():]
            for q in ('"""', "'''"):
                if rest.count(q) == 1:
                    in_multiline = q
    return out


# ---------------------------------------------------------------- reader

class Reader:
    """Reads values from a parsed document and raises errors that point at the line."""

    def __init__(self, file: str = "", lines: dict[tuple, int] | None = None):
        self.file = file
        self.lines = lines or {}

    def line(self, path: tuple) -> int | None:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    @staticmethod
    def key(path: tuple) -> str:
        return ".".join(str(x) if not isinstance(x, int) else "[%d]" % x for x in path).replace(".[", "[")

    def error(self, path: tuple, message: str) -> ConfigError:
        return ConfigError(message, self.key(path), self.file, self.line(path))

    def table(self, d: Any, path: tuple, known: tuple) -> dict:
        if not isinstance(d, dict):
            raise self.error(path, "must be a table, got %s" % type(d).__name__)
        for k in d:
            if k not in known:
                raise self.error(path + (k,), "unknown key (known: %s)" % ", ".join(known))
        return d

    def get(self, d: dict, path: tuple, key: str, kind, default=None, lo=None, hi=None, required=False,
            choices=None):
        p = path + (key,)
        if key not in d:
            if required:
                raise self.error(path, "missing required key %r" % key)
            return default
        v = d[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(v, bool) and bool not in kinds:
            raise self.error(p, "must be %s, got a boolean" % _kind_name(kinds))
        if float in kinds:
            ok = isinstance(v, (int, float))
            v = float(v) if ok else v
        else:
            ok = isinstance(v, kinds)
        if not ok:
            raise self.error(p, "must be %s, got %r" % (_kind_name(kinds), v))
        if lo is not None and v < lo or hi is not None and v > hi:
            raise self.error(p, "must be between %s and %s, got %r" % (lo, hi, v))
        if choices is not None and v not in choices:
            raise self.error(p, "must be one of %s, got %r" % (", ".join(map(str, choices)), v))
        return v

    def section(self, d: dict, path: tuple, schema, extra: tuple = (), **defaults) -> dict:
        """Read the `setting` fields of dataclass `schema` from table `d`; unknown keys are errors.

        `extra` names keys the caller reads itself; `defaults` replace declared
        defaults that depend on context (a role's heartbeat, a link's name).
        """
        fields = [f for f in dataclasses.fields(schema) if "kind" in f.metadata]
        self.table(d, path, tuple(f.name for f in fields) + extra)
        out = {}
        for f in fields:
            m = f.metadata
            default = defaults[f.name] if f.name in defaults else _default(f)
            out[f.name] = self.get(d, path, f.name, m["kind"], default, m["lo"], m["hi"], m["required"],
                                   m["choices"])
        return out


def _kind_name(kinds: tuple) -> str:
    return " or ".join(_KIND_NAME.get(k, getattr(k, "__name__", str(k))) for k in kinds)
