"""Device registry in SQLite: who may talk to the gateway, with which key, and where it stands.

The file holds link keys, so it is created 0600 and its directory 0700; keys
never leave through repr(), logs or `export` unless asked for by name. The
same file keeps each device's protocol counters (downlink sequence ceiling,
uplink replay window) so a restart neither reuses a number nor accepts a replay.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from protocol import rules
from protocol.keyfile import KEY_LEN, KeyFileError, check_private, key_from_hex
from protocol.messages import ROLE_IDS


_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    site TEXT NOT NULL,
    key BLOB NOT NULL UNIQUE,
    position TEXT,
    fw INTEGER,
    last_seen REAL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS loop_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Which devices changed, whichever tool changed them: a running daemon reloads just those.
CREATE TABLE IF NOT EXISTS device_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS devices_added AFTER INSERT ON devices BEGIN
    INSERT INTO device_changes(id) VALUES (new.id);
    DELETE FROM device_changes WHERE seq <= (SELECT max(seq) FROM device_changes) - 1000;
END;
CREATE TRIGGER IF NOT EXISTS devices_removed AFTER DELETE ON devices BEGIN
    INSERT INTO device_changes(id) VALUES (old.id);
    DELETE FROM device_changes WHERE seq <= (SELECT max(seq) FROM device_changes) - 1000;
END;
CREATE TRIGGER IF NOT EXISTS devices_changed AFTER UPDATE OF id, role, site, key, position ON devices BEGIN
    INSERT INTO device_changes(id) VALUES (old.id);
    INSERT INTO device_changes(id) VALUES (new.id);
    DELETE FROM device_changes WHERE seq <= (SELECT max(seq) FROM device_changes) - 1000;
END;
CREATE TABLE IF NOT EXISTS counters (
    id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    down_ceiling INTEGER,
    up_top INTEGER NOT NULL DEFAULT -1,
    up_bits INTEGER NOT NULL DEFAULT 0
);
"""


class RegistryError(Exception):
    """A registry operation was refused; the message says which device and why."""


class DuplicateDevice(RegistryError):
    pass


class DuplicateKey(RegistryError):
    pass


class UnknownDevice(RegistryError):
    pass


class InvalidDevice(RegistryError):
    pass


@dataclass
class Device:
    id: str
    role: str
    site: str
    key: bytes
    position: str | None = None
    fw: int | None = None
    last_seen: float | None = None

    def __repr__(self) -> str:
        return "Device(id=%r, role=%r, site=%r, key=<%d bytes>, position=%r, fw=%r)" % (
            self.id, self.role, self.site, len(self.key), self.position, self.fw)

    def public(self) -> dict:
        return {"id": self.id, "role": self.role, "site": self.site, "position": self.position,
                "fw": self.fw, "last_seen": self.last_seen}


def _private_dir(d: str) -> None:
    if d and not os.path.isdir(d):
        os.makedirs(d, mode=0o700, exist_ok=True)


def validate(device_id, role, site, key, position=None) -> None:
    if not rules.valid_id(device_id):
        raise InvalidDevice("device id %r must be %s" % (device_id, rules.ID_RULE))
    if role not in ROLE_IDS:
        raise InvalidDevice("device %s: role %r is not one of %s" % (device_id, role, ", ".join(ROLE_IDS)))
    if not rules.valid_site(site):
        raise InvalidDevice("device %s: site %r must be %s" % (device_id, site, rules.SITE_RULE))
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise InvalidDevice("device %s: key must be exactly %d bytes (SPEC section 1)" % (device_id, KEY_LEN))
    if position is not None and not isinstance(position, str):
        raise InvalidDevice("device %s: position must be text" % device_id)


class Registry:
    """The registry file; one connection, used from the event loop thread only."""

    def __init__(self, path: str):
        self.path = path
        _private_dir(os.path.dirname(os.path.abspath(path)))
        old = os.umask(0o077)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a downlink ceiling must survive power loss, or numbers would be reused
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.chmod(path + suffix, 0o600)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- devices

    def add(self, device_id: str, role: str, site: str, key: bytes, position: str | None = None,
            replace: bool = False) -> Device:
        """Register a device; a key or id that belongs to another device is refused (DuplicateKey/DuplicateDevice)."""
        validate(device_id, role, site, key, position)
        key = bytes(key)
        cur = self.db.execute("SELECT id FROM devices WHERE key = ?", (key,)).fetchone()
        if cur and cur[0] != device_id:
            raise DuplicateKey("device %s: this key already belongs to device %s" % (device_id, cur[0]))
        exists = self.db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone()
        if exists and not replace:
            raise DuplicateDevice("device %s is already registered (use --replace to re-provision)" % device_id)
        with self.db:
            self.db.execute("BEGIN")
            self._put(device_id, role, site, key, position, bool(exists))
        return Device(device_id, role, site, key, position)

    def _put(self, device_id: str, role: str, site: str, key: bytes, position: str | None, exists: bool) -> None:
        if exists:
            # counters stay: a re-provisioned board that restarts at 0 is resynced above every
            # number it used before, so its event ids (eid) never repeat for this device id
            self.db.execute("UPDATE devices SET role=?, site=?, key=?, position=? WHERE id=?",
                            (role, site, key, position, device_id))
        else:
            self.db.execute("INSERT INTO devices(id, role, site, key, position, added) VALUES (?,?,?,?,?,?)",
                            (device_id, role, site, key, position, time.time()))

    def remove(self, device_id: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            n = self.db.execute("DELETE FROM devices WHERE id=?", (device_id,)).rowcount
        if not n:
            raise UnknownDevice("no device %r" % device_id)

    def get(self, device_id: str) -> Device:
        r = self.db.execute("SELECT id, role, site, key, position, fw, last_seen FROM devices WHERE id=?",
                            (device_id,)).fetchone()
        if r is None:
            raise UnknownDevice("no device %r" % device_id)
        return Device(*r)

    def find(self, device_id: str) -> Device | None:
        try:
            return self.get(device_id)
        except UnknownDevice:
            return None

    def all(self) -> list[Device]:
        return [Device(*r) for r in self.db.execute(
            "SELECT id, role, site, key, position, fw, last_seen FROM devices ORDER BY id")]

    def set_seen(self, rows: list[tuple[float, int | None, str]]) -> None:
        """Batch update (last_seen, fw, id); fw None leaves it unchanged."""
        self.db.executemany("UPDATE devices SET last_seen=?, fw=COALESCE(?, fw) WHERE id=?", rows)

    # -- changes made by any connection

    def data_version(self) -> int:
        """Changes when another connection (another tool, the daemon's writer) committed."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def changes_since(self, seq: int) -> tuple[int, list[str] | None]:
        """(last change number, ids of devices added, changed or removed after `seq`).

        None instead of ids: more changed than the log keeps; read everything again.
        """
        first, last = self.db.execute("SELECT min(seq), max(seq) FROM device_changes").fetchone()
        if last is None or last == seq:
            return seq if last is None else last, []
        if seq < first - 1:
            return last, None
        ids = {r[0] for r in self.db.execute("SELECT id FROM device_changes WHERE seq > ?", (seq,))}
        return last, sorted(ids)

    # -- protocol counters

    def counters(self, device_id: str) -> tuple[int | None, int, int]:
        r = self.db.execute("SELECT down_ceiling, up_top, up_bits FROM counters WHERE id=?",
                            (device_id,)).fetchone()
        return (r[0], r[1], r[2]) if r else (None, -1, 0)

    def all_counters(self) -> dict[str, tuple[int | None, int, int]]:
        """Every device's counters in one query (start-up reads 10,000 of them)."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute(
            "SELECT id, down_ceiling, up_top, up_bits FROM counters")}

    def store_ceiling(self, device_id: str, ceiling: int) -> None:
        """Durable before return: SeqCounter relies on it."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO counters(id, down_ceiling) VALUES (?, ?) "
                            "ON CONFLICT(id) DO UPDATE SET down_ceiling=excluded.down_ceiling",
                            (device_id, ceiling))

    def store_windows(self, rows: list[tuple[str, int, int]], seen: list[tuple[float, int | None, str]] = ()) -> None:
        """One transaction for a batch of (id, top, bits) replay windows and last-seen updates."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO counters(id, up_top, up_bits) VALUES (?, ?, ?) "
                                "ON CONFLICT(id) DO UPDATE SET up_top=excluded.up_top, up_bits=excluded.up_bits",
                                rows)
            if seen:
                self.set_seen(list(seen))

    def loop_state(self) -> dict:
        """The control loops' saved state {loop name: JSON-able value}."""
        return {n: json.loads(v) for n, v in self.db.execute("SELECT name, value FROM loop_state")}

    # -- import / export

    def import_file(self, path: str, replace: bool = False) -> list[str]:
        """Read a provisioning file: one JSON object or a list of {"id","role","site","key_hex","position"}."""
        try:
            check_private(path)
        except KeyFileError as e:
            raise RegistryError("%s; %s" % (e.detail, e.hint) if e.hint else e.detail) from None
        with open(path, encoding="utf-8") as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as e:
                raise RegistryError("%s:%d: not valid JSON: %s" % (path, e.lineno, e.msg)) from None
        items = doc if isinstance(doc, list) else [doc]
        added = []
        parsed = []
        for i, d in enumerate(items):
            where = "%s: entry %d" % (path, i)
            if not isinstance(d, dict):
                raise RegistryError("%s: must be an object" % where)
            extra = set(d) - {"id", "role", "site", "key_hex", "position"}
            if extra:
                raise RegistryError("%s: unknown field %s" % (where, ", ".join(sorted(extra))))
            for k in ("id", "role", "site", "key_hex"):
                if k not in d:
                    raise RegistryError("%s: missing field %r" % (where, k))
            try:
                key = key_from_hex(d["key_hex"], where + ": key_hex")
            except KeyFileError as e:
                raise RegistryError(e.detail) from None
            try:
                validate(d["id"], d["role"], d["site"], key, d.get("position"))
            except InvalidDevice as e:
                raise InvalidDevice("%s: %s" % (where, e)) from None
            parsed.append((d["id"], d["role"], d["site"], key, d.get("position")))
        ids, keys = set(), set()
        owners = dict(self.db.execute("SELECT key, id FROM devices"))
        known = set(owners.values())
        for p in parsed:  # refuse the whole file before writing any of it
            if p[0] in ids or p[3] in keys:
                raise RegistryError("%s: device %s appears twice or shares a key with another entry" % (path, p[0]))
            ids.add(p[0])
            keys.add(p[3])
            owner = owners.get(p[3])
            if owner is not None and owner != p[0]:
                raise DuplicateKey("%s: device %s: this key already belongs to device %s" % (path, p[0], owner))
            if not replace and p[0] in known:
                raise DuplicateDevice("%s: device %s is already registered (use --replace)" % (path, p[0]))
        with self.db:  # one transaction, one fsync: 10,000 devices in well under 2 s (docs/benchmarks.md)
            self.db.execute("BEGIN")
            for p in parsed:
                self._put(*p, exists=p[0] in known)
                added.append(p[0])
        return added

    def export(self, with_keys: bool = False) -> list[dict]:
        out = []
        for d in self.all():
            e = {"id": d.id, "role": d.role, "site": d.site, "position": d.position}
            if with_keys:
                e["key_hex"] = d.key.hex()
            out.append(e)
        return out


class RegistryWriter:
    """The daemon's registry writes, in one thread with its own connection: no fsync on the event loop.

    Ceilings are committed with synchronous=FULL (they must survive power loss,
    or downlink numbers would be reused); windows and last-seen times with
    NORMAL (a power cut may lose the last half second of them, see docs/gateway.md).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._ceilings: list = []
        self._exec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry")
        self._db = None
        self._exec.submit(self._open).result()

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")

    def _tx(self, sync: str, fn) -> None:
        db = self._db
        db.execute("PRAGMA synchronous=" + sync)
        with db:
            db.execute("BEGIN IMMEDIATE")
            fn(db)

    def store_ceiling(self, device_id: str, ceiling: int):
        """A concurrent.futures.Future that completes once the ceiling is durable."""
        return self.store_ceilings([(device_id, ceiling)])

    def store_ceilings(self, rows: list[tuple[str, int]]):
        """One Future for many (id, ceiling) rows, complete once all are durable.

        Ceilings asked for while one commit runs share the next commit: at start-up
        10,000 devices cost one call and a few fsyncs, not 10,000.
        """
        f: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._ceilings.append((rows, f))
            if len(self._ceilings) == 1:
                self._exec.submit(self._commit_ceilings)
        return f

    def _commit_ceilings(self) -> None:
        with self._lock:
            batch, self._ceilings = self._ceilings, []
        try:
            self._tx("FULL", lambda db: db.executemany(
                "INSERT INTO counters(id, down_ceiling) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET down_ceiling=excluded.down_ceiling",
                [r for rows, _ in batch for r in rows]))
        except BaseException as e:  # noqa: BLE001 - every waiter learns the disk refused
            for _, f in batch:
                f.set_exception(e)
            return
        for _, f in batch:
            f.set_result(None)

    def store_windows(self, rows, seen):
        def run():
            def body(db):
                db.executemany("INSERT INTO counters(id, up_top, up_bits) VALUES (?, ?, ?) ON CONFLICT(id) "
                               "DO UPDATE SET up_top=excluded.up_top, up_bits=excluded.up_bits", rows)
                db.executemany("UPDATE devices SET last_seen=?, fw=COALESCE(?, fw) WHERE id=?", seen)
            self._tx("NORMAL", body)
        return self._exec.submit(run)

    def store_loop_state(self, state: dict):
        rows = [(n, json.dumps(v, separators=(",", ":"))) for n, v in state.items()]

        def run():
            self._tx("NORMAL", lambda db: db.executemany(
                "INSERT INTO loop_state(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value", rows))
        return self._exec.submit(run)

    def close(self) -> None:
        def run():
            if self._db is not None:
                self._db.close()
        self._exec.submit(run).result()
        self._exec.shutdown(wait=True)


def write_private(path: str, text: str) -> None:
    """Write a file that may hold keys: created 0600, never briefly world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)
