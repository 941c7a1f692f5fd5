"""The durable outbox on real SQLite: order, durability across reopen, caps, drop counting."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from gateway.uplink import OutboxConfig, OutboxError
from gateway.uplink import outbox as outbox_mod
from gateway.uplink.outbox import PRIO_EVENT, PRIO_TELEMETRY, Outbox


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def take_all(ob: Outbox, n: int) -> list:
    rows = []
    while len(rows) < n:
        rows += await asyncio.wait_for(ob.take(n - len(rows)), 5)
    return rows


async def test_rows_come_back_in_append_order_and_survive_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path, OutboxConfig())
    await ob.open()
    futs = [ob.append(f"t/{i}", b"%d" % i) for i in range(500)]
    await futs[-1]
    assert all(f.done() and f.exception() is None for f in futs)
    rows = await take_all(ob, 300)
    assert [r.payload for r in rows] == [b"%d" % i for i in range(300)]
    for r in rows[:100]:
        ob.ack(r.id)
    await ob.close()

    # A restart: what was taken but never acked is delivered again, in order.
    ob = Outbox(path, OutboxConfig())
    await ob.open()
    assert ob.depth == 400
    rows = await take_all(ob, 400)
    assert [r.payload for r in rows] == [b"%d" % i for i in range(100, 500)]
    assert [r.topic for r in rows[:2]] == ["t/100", "t/101"]
    await ob.close()


async def test_rewind_redelivers_unacked_rows_without_the_acked_ones(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig())
    await ob.open()
    await ob.append("a", b"x")
    for i in range(9):
        ob.append("a", b"%d" % i)
    await ob.append("a", b"last")
    rows = await take_all(ob, 11)
    ob.ack(rows[0].id)
    ob.ack(rows[2].id)
    ob.rewind()
    again = await take_all(ob, 9)
    assert [r.id for r in again] == [r.id for r in rows if r.id not in (rows[0].id, rows[2].id)]
    await ob.close()


async def test_backlog_larger_than_memory_is_paged_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_mod, "_MEMORY_ROWS", 50)
    monkeypatch.setattr(outbox_mod, "_PAGE", 16)
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig())
    await ob.open()
    got = []
    for batch in range(10):
        futs = [ob.append("t", b"%d" % (batch * 40 + i)) for i in range(40)]
        await futs[-1]
        got += await take_all(ob, 7)  # the reader falls behind: memory spills to paging
    while len(got) < 400:
        got += await asyncio.wait_for(ob.take(100), 5)
    assert [int(r.payload) for r in got] == list(range(400))
    await ob.close()


async def test_size_cap_drops_oldest_telemetry_first_and_counts_it(tmp_path):
    drops = []
    path = tmp_path / "o.sqlite"
    cfg = OutboxConfig(max_messages=10)
    ob = Outbox(path, cfg, on_drop=lambda reason, t, e: drops.append((reason, t, e)))
    await ob.open()
    for i in range(6):
        await ob.append("tele", b"t%d" % i, prio=PRIO_TELEMETRY)
    for i in range(8):
        await ob.append("event", b"e%d" % i, prio=PRIO_EVENT)
    assert ob.depth == 10
    assert ob.dropped_totals() == {"size_telemetry": 4}
    assert sum(d[1] for d in drops) == 4 and all(d[0] == "size" and d[2] == 0 for d in drops)
    for i in range(8, 13):
        await ob.append("event", b"e%d" % i, prio=PRIO_EVENT)
    assert ob.dropped_totals() == {"size_telemetry": 6, "size_event": 3}
    rows = await take_all(ob, 10)
    assert [r.payload for r in rows] == [b"e%d" % i for i in range(3, 13)]
    await ob.close()

    # The counters are part of the database: a restart does not hide past drops.
    ob = Outbox(path, cfg)
    await ob.open()
    assert ob.dropped_totals() == {"size_telemetry": 6, "size_event": 3}
    assert ob.depth == 10
    await ob.close()


async def test_byte_cap_is_enforced(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig(max_bytes=64 * 1024))
    await ob.open()
    payload = b"x" * 1000
    for _ in range(100):
        ob.append("t", payload, prio=PRIO_TELEMETRY)
    await ob.append("t", payload, prio=PRIO_TELEMETRY)
    assert ob.bytes <= 64 * 1024
    assert ob.depth == ob.bytes // 1001
    assert ob.dropped_totals()["size_telemetry"] == 101 - ob.depth
    await ob.close()


async def test_age_cap_drops_rows_older_than_max_age(tmp_path):
    clock = Clock()
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig(max_age_s=60), clock=clock)
    await ob.open()
    for i in range(5):
        await ob.append("old", b"%d" % i, prio=PRIO_EVENT if i % 2 else PRIO_TELEMETRY)
    clock.t += 30
    await ob.append("mid", b"m")
    assert ob.depth == 6 and ob.dropped_totals() == {}
    assert ob.oldest_age() == pytest.approx(30)
    clock.t += 40  # the first five are now 70 s old
    await ob.append("new", b"n")
    assert ob.dropped_totals() == {"age_telemetry": 3, "age_event": 2}
    rows = await take_all(ob, 2)
    assert [r.topic for r in rows] == ["mid", "new"]
    await ob.close()


async def test_a_second_process_cannot_open_the_same_outbox(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, OutboxConfig())
    await ob.open()
    await ob.append("t", b"1")
    # Another connection (as another gateway process would have) is locked out.
    with pytest.raises(sqlite3.OperationalError):
        other = sqlite3.connect(path, timeout=0.1)
        other.execute("SELECT count(*) FROM outbox").fetchone()
    second = Outbox(path, OutboxConfig())
    with pytest.raises(OutboxError, match="another gateway"):
        await second.open()
    await ob.close()


async def test_append_after_close_raises_and_is_not_stored(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, OutboxConfig())
    await ob.open()
    await ob.close()
    with pytest.raises(OutboxError):
        ob.append("t", b"x")
    assert sqlite3.connect(path).execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


async def test_a_full_disk_fails_the_callers_and_loses_nothing_already_stored(tmp_path):
    """SQLite's own "database or disk is full" (page limit), not a mock."""
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig())
    await ob.open()
    await ob.append("t", b"kept")
    pages = await ob.in_writer(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
    await ob.in_writer(lambda db: db.execute(f"PRAGMA max_page_count={pages + 1}"))
    futs = [ob.append("t", b"x" * 20_000) for _ in range(3)]
    with pytest.raises(OutboxError, match="full"):
        await futs[-1]
    assert all(isinstance(f.exception(), OutboxError) for f in futs)
    assert ob.depth == 1
    await ob.in_writer(lambda db: db.execute("PRAGMA max_page_count=1073741823"))
    await ob.append("t", b"after")
    rows = await take_all(ob, 2)
    assert [r.payload for r in rows] == [b"kept", b"after"]
    await ob.close()


async def test_rows_dropped_while_waiting_in_memory_are_not_sent(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", OutboxConfig(max_messages=10))
    await ob.open()
    first = asyncio.ensure_future(ob.take(1))  # the reader is caught up: new rows go through memory
    await ob.append("event", b"first", prio=PRIO_EVENT)
    assert [r.payload for r in await first] == [b"first"]
    for i in range(12):
        await ob.append("tele", b"t%d" % i, prio=PRIO_TELEMETRY)
    assert ob.dropped_totals() == {"size_telemetry": 3}
    rows = await take_all(ob, 9)
    assert [r.payload for r in rows] == [b"t%d" % i for i in range(3, 12)]
    assert ob.take_nowait() is None
    await ob.close()


async def test_group_commit_window_bounds_transactions_not_durability(tmp_path):
    """session.commit_ms: one transaction per window under load (the SD card's wear), each future
    resolved only once its own rows are committed (an event is acked to its device only then)."""
    ob = Outbox(tmp_path / "outbox.sqlite", OutboxConfig(durability="full"), commit_window_s=0.3)
    await ob.open()
    commits = []
    store_commit = ob._store.commit

    def counting(batch, acked):
        commits.append(len(batch))
        return store_commit(batch, acked)

    ob._store.commit = counting
    await asyncio.wait_for(ob.append("t/0", b"first"), 5)  # idle before: committed at once
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    futs = []
    for i in range(10):  # a steady trickle inside one window
        futs.append(ob.append("t/%d" % (i + 1), b"x"))
        await asyncio.sleep(0.01)
    assert not any(f.done() for f in futs), "committed before the window closed"
    await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert commits == [1, 10] and loop.time() - t0 >= 0.25
    rows = await take_all(ob, 11)
    for r in rows:
        ob.ack(r.id)
    await ob.close()  # the deletes wait for company, but close commits them
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
