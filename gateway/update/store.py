"""The update store: imported bundles, rollouts and each device's progress, in `updates.sqlite`.

Beside the registry and the outbox in the state directory (0600, WAL). `park-gateway
update import` writes a verified bundle here without a daemon (as `device import`
writes the registry); the daemon owns rollouts and targets. Writes happen at state
changes (a few per device and update), never per chunk: the device's own offset is
the truth about bytes after a restart.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    kind INTEGER NOT NULL,
    fw INTEGER NOT NULL,
    floor INTEGER NOT NULL,
    key TEXT NOT NULL,
    meta TEXT NOT NULL,
    data BLOB NOT NULL,
    imported REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle INTEGER NOT NULL REFERENCES bundles(id),
    site TEXT NOT NULL,
    role TEXT NOT NULL,
    canary INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS targets (
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    device TEXT NOT NULL,
    uid INTEGER NOT NULL,
    canary INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    state TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (rollout, device)
);
CREATE TABLE IF NOT EXISTS floors (
    device TEXT PRIMARY KEY,
    floor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    what TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

REFUSALS_KEPT = 50


class Store:
    def __init__(self, path: str):
        self.path = path
        fresh = not os.path.exists(path)
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        if fresh:
            os.chmod(path, 0o600)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- bundles

    def add_bundle(self, b) -> tuple[int, bool]:
        """(id, new?) of a verified protocol.bundle.Bundle; the same image twice is one bundle."""
        sha = b.sha.hex()
        row = self.db.execute("SELECT id FROM bundles WHERE sha = ?", (sha,)).fetchone()
        if row is not None:
            return row["id"], False
        m = b.meta
        cur = self.db.execute(
            "INSERT INTO bundles(sha, role, kind, fw, floor, key, meta, data, imported) VALUES (?,?,?,?,?,?,?,?,?)",
            (sha, m["role"], m["kind"], m["fw"], m["floor"], m["key"].hex(), json.dumps(b.describe()), b.image,
             time.time()))
        return int(cur.lastrowid or 0), True

    def bundle(self, bid: int, with_image: bool = False) -> dict | None:
        cols = "id, sha, role, kind, fw, floor, key, meta, imported" + (", data" if with_image else "")
        row = self.db.execute("SELECT %s FROM bundles WHERE id = ?" % cols, (bid,)).fetchone()
        return _bundle(row) if row is not None else None

    def bundles(self) -> list[dict]:
        rows = self.db.execute("SELECT id, sha, role, kind, fw, floor, key, meta, imported FROM bundles ORDER BY id")
        return [_bundle(r) for r in rows]

    # -- rollouts and targets

    def add_rollout(self, bundle: int, site: str, role: str, targets: list[tuple[str, int, bool]],
                    canary: int) -> int:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            rid = self.db.execute("INSERT INTO rollouts(bundle, site, role, canary, state, created, updated) "
                                  "VALUES (?,?,?,?,?,?,?)", (bundle, site, role, canary, "running", now, now)).lastrowid
            assert rid is not None
            self.db.executemany("INSERT INTO targets(rollout, device, uid, canary, ord, state, updated) "
                                "VALUES (?,?,?,?,?,?,?)",
                                [(rid, d, uid, int(c), i, "waiting", now) for i, (d, uid, c) in enumerate(targets)])
        return rid

    def rollout(self, rid: int) -> dict | None:
        row = self.db.execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        return dict(row) if row is not None else None

    def rollouts(self, states: tuple[str, ...] | None = None) -> list[dict]:
        rows = self.db.execute("SELECT * FROM rollouts ORDER BY id").fetchall()
        return [dict(r) for r in rows if states is None or r["state"] in states]

    def set_rollout(self, rid: int, state: str, reason: str = "") -> None:
        self.db.execute("UPDATE rollouts SET state = ?, reason = ?, updated = ? WHERE id = ?",
                        (state, reason, time.time(), rid))

    def targets(self, rid: int) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM targets WHERE rollout = ? ORDER BY ord", (rid,))]

    def set_target(self, rid: int, device: str, state: str, bytes_: int, reason: str = "", detail: str = "") -> None:
        self.db.execute("UPDATE targets SET state = ?, bytes = ?, reason = ?, detail = ?, updated = ? "
                        "WHERE rollout = ? AND device = ?", (state, bytes_, reason, detail, time.time(), rid, device))

    def floor(self, device: str) -> int:
        row = self.db.execute("SELECT floor FROM floors WHERE device = ?", (device,)).fetchone()
        return row["floor"] if row is not None else 0

    def raise_floor(self, device: str, floor: int) -> None:
        self.db.execute("INSERT INTO floors(device, floor) VALUES (?, ?) ON CONFLICT(device) DO UPDATE SET "
                        "floor = max(floor, excluded.floor)", (device, floor))

    # -- refusals: what was not imported or planned, and why (shown by `update status`)

    def refused(self, what: str, code: str, reason: str) -> None:
        self.db.execute("INSERT INTO refusals(at, what, code, reason) VALUES (?,?,?,?)", (time.time(), what, code, reason))
        self.db.execute("DELETE FROM refusals WHERE n <= (SELECT MAX(n) FROM refusals) - ?", (REFUSALS_KEPT,))

    def refusals(self, last: int = 10) -> list[dict]:
        rows = self.db.execute("SELECT at, what, code, reason FROM refusals ORDER BY n DESC LIMIT ?", (last,))
        return [dict(r) for r in rows][::-1]


def _bundle(row) -> dict:
    d = dict(row)
    d["meta"] = json.loads(d["meta"])
    return d
