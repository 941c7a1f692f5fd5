"""Output for humans and scripts: progress on stderr, one summary line or one JSON object on stdout.

Why split: a script doing ``park-device deploy --json | jq`` must get exactly one JSON
document on stdout, while a technician at a pole wants a bar and a sentence.
"""
from __future__ import annotations

import json
import sys
import time
from typing import IO, Any


class Progress:
    """A bar drawn in place on a terminal; silent (but still counting) elsewhere."""

    def __init__(self, ui: "UI", label: str, total: int) -> None:
        self.ui, self.label, self.total, self.done = ui, label, max(int(total), 0), 0
        self._last = 0.0

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        self._draw(note)

    def set(self, done: int, note: str = "") -> None:
        self.done = done
        self._draw(note)

    def _draw(self, note: str, force: bool = False) -> None:
        if not self.ui.bars:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.05 and self.done < self.total:
            return
        self._last = now
        width = 28
        frac = (self.done / self.total) if self.total else 1.0
        fill = int(frac * width)
        line = f"\r{self.label:<12} [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {note[:40]:<40}"
        self.ui.err.write(line)
        self.ui.err.flush()

    def __enter__(self) -> "Progress":
        self._draw("", force=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ui.bars:
            self._draw("", force=True)
            self.ui.err.write("\n")
            self.ui.err.flush()


class UI:
    """json=True: nothing but the final JSON object on stdout; notes go to stderr only when verbose."""

    def __init__(self, json_mode: bool = False, quiet: bool = False, out: IO[str] | None = None,
                 err: IO[str] | None = None) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.bars = (not json_mode and not quiet and hasattr(self.err, "isatty") and self.err.isatty())

    def progress(self, label: str, total: int) -> Progress:
        return Progress(self, label, total)

    def note(self, text: str) -> None:
        if not self.json and not self.quiet:
            self.err.write(text + "\n")
            self.err.flush()

    def line(self, text: str) -> None:
        """A line of the command's own human output (tables, selftest rows); not in --json."""
        if not self.json:
            self.out.write(text + "\n")
            self.out.flush()

    def event(self, obj: dict) -> None:
        """One JSON line for streaming commands (monitor --json)."""
        self.out.write(json.dumps(obj, sort_keys=True) + "\n")
        self.out.flush()

    def finish(self, command: str, summary: str, result: dict) -> None:
        if self.json:
            doc = {"ok": True, "command": command, "summary": summary}
            doc.update(result)
            self.out.write(json.dumps(doc, sort_keys=True) + "\n")
        else:
            self.out.write(summary + "\n")
        self.out.flush()

    def fail(self, command: str, error: Exception) -> None:
        d = error.as_dict() if hasattr(error, "as_dict") else {"code": "internal", "message": str(error)}
        if self.json:
            self.out.write(json.dumps({"ok": False, "command": command, "error": d}, sort_keys=True) + "\n")
            self.out.flush()
        else:
            self.err.write(f"park-device {command}: error [{d['code']}]: {error}\n")
            self.err.flush()
