"""Sessions over a real TCP socket against sim.devsim (a CPython TEST PEER, not the firmware).

No broker runs here: every event must still be durable in the SQLite outbox
before the device sees its ack.
"""

import asyncio
import sqlite3

import pytest

from gwharness import connected, load, provision, running, sim, until, write_config

from sim.devsim import SimLink
from gateway.session import CommandFailed
from protocol import cbor, codec, cose, framing, messages


@pytest.fixture
async def park(tmp_path):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}],
                            edges=[("l001", "l002")]))
    keys = provision(cfg, [("l001", "light_pole"), ("l002", "light_pole"), ("k001", "locker"),
                           ("c001", "container_sensor")])
    async with running(cfg) as d:
        await connected(link)
        yield d, link, keys, cfg
    await link.close()


def outbox_ids(cfg):
    """Rows in the outbox file; the daemon holds it EXCLUSIVE while it runs, so read after it stopped."""
    db = sqlite3.connect(cfg.outbox_path)
    try:
        return [r[0] for r in db.execute("SELECT payload FROM outbox ORDER BY id")]
    finally:
        db.close()


async def test_hello_gets_welcome_with_echo_time_and_heartbeat(park):
    d, link, keys, cfg = park
    dev = link.add(sim("l001", keys, "light_pole"))
    w = await dev.hello()
    assert w["echo"] == dev.nonce and w["hb"] == 60 and w["time"] > 1_700_000_000
    await until(lambda: any(m["type"] == "ack" for m in dev.received), what="ack of hello")
    assert d.sessions.by_id["l001"].fw == dev.fw
    # a pole gets its site profile right after hello
    await until(lambda: any(c["type"] == "light_profile" for c in dev.commands), what="profile")


async def test_event_is_in_the_outbox_before_the_ack(park):
    d, link, keys, cfg = park
    dev = link.add(sim("c001", keys, "container_sensor"))
    await dev.hello()
    eid = await dev.event({"type": "alarm", "code": 1, "comp": 0, "value": 85})
    assert d.uplink.stats().outbox_depth >= 2  # no broker: it stays in the outbox
    d.stop()
    await asyncio.wait_for(d.done.wait(), 10)
    rows = outbox_ids(cfg)
    assert any(b'"id":"c001-%d"' % eid in r and b'"alarm":"fire"' in r for r in rows), rows
    # the waste loop forwarded a fire alert at once, too
    assert any(b'"kind":"fire"' in r for r in rows)
    # and its state was saved for the next start (a burning container is not re-announced)
    from gateway.registry import Registry

    with Registry(cfg.registry_path) as reg:
        assert reg.loop_state()["waste"]["stadtpark"]["c001"][5] is True


async def test_retransmitted_event_is_acked_but_stored_once(park):
    d, link, keys, cfg = park
    dev = link.add(sim("k001", keys, "locker"))
    await dev.hello()
    msg = {"type": "door", "eid": 4242, "t": 0, "comp": 3, "open": True, "authorized": True}
    await dev.event(msg)
    await dev.event(msg)  # same eid, new seq: the device did not see the first ack
    assert d.sessions.counters["duplicate_events"] == 1
    d.stop()
    await asyncio.wait_for(d.done.wait(), 10)
    rows = [r for r in outbox_ids(cfg) if b'"id":"k001-4242"' in r]
    assert len(rows) == 1


async def test_garbage_and_forged_frames_are_counted_dropped_and_the_link_stays_up(park):
    d, link, keys, cfg = park
    dev = link.add(sim("l001", keys, "light_pole"))
    await dev.hello()
    good = dev.frame({"type": "light", "level": 50, "state": 1, "ambient": 10, "lamp_ma": 300})
    forged = codec.pack(cose.Mac(b"\x55" * 32), cose.UP, b"l001", 999, {"type": "motion", "eid": 999, "t": 0, "count": 1})
    unknown = codec.pack(cose.Mac(b"\x55" * 32), cose.UP, b"x999", 1, {"type": "motion", "eid": 1, "t": 0, "count": 1})
    bad_crc = bytearray(dev.frame({"type": "motion", "eid": 7, "t": 0, "count": 1}))
    bad_crc[5] ^= 0x01
    link.write(b"\x13\x37garbage without a delimiter" * 20 + b"\x00")
    link.write(forged + unknown + bytes(bad_crc) + b"\xff" * 300 + b"\x00")
    link.write(good)
    link.write(good)  # an exact replay
    await until(lambda: d.sessions.counters["drop_replay"] == 1, what="replay counted")
    c = d.sessions.counters
    assert c["drop_bad_tag"] == 1 and c["drop_unknown_kid"] == 1 and c["drop_oversize"] >= 2
    assert c["drop_crc"] + c["drop_cobs"] >= 1
    lk = d.links[0]
    assert lk.connected and lk.connects == 1
    assert d.sessions.by_id["l001"].state["light"]["level"] == 50
    # and the link still carries acked traffic
    await dev.event({"type": "motion", "count": 2})
    # nothing was answered to the bad frames: only welcome/ack/profile/ack went down
    assert all(m["type"] in ("ack", "light_profile", "welcome") for m in dev.received)


async def test_authentic_bad_payload_gets_a_nack_naming_the_field(park):
    d, link, keys, cfg = park
    dev = link.add(sim("c001", keys, "container_sensor"))
    await dev.hello()
    payload = cbor.dumps([16, 101, 20, None])  # fill 101 % is out of range
    seq = dev.take()
    link.write(framing.encode_frame(cose.seal(dev.mac, cose.UP, dev.kid, seq, payload)))
    await until(lambda: any(m["type"] == "nack" and m["ref"] == seq for m in dev.received), what="nack")
    nack = [m for m in dev.received if m["type"] == "nack"][0]
    assert nack["field"] == "fill" and nack["code"] == messages.E_MALFORMED
    seq2 = dev.take()  # authentic, but not CBOR at all
    link.write(framing.encode_frame(cose.seal(dev.mac, cose.UP, dev.kid, seq2, b"\xff\x00")))
    seq3 = dev.take()  # authentic, a message type this gateway does not know
    link.write(framing.encode_frame(cose.seal(dev.mac, cose.UP, dev.kid, seq3, cbor.dumps([99, 1]))))
    await until(lambda: {m["ref"] for m in dev.received if m["type"] == "nack"} >= {seq2, seq3}, what="nacks")
    codes = {m["ref"]: m["code"] for m in dev.received if m["type"] == "nack"}
    assert codes[seq2] == messages.E_MALFORMED and codes[seq3] == messages.E_UNKNOWN_TYPE


async def test_device_that_lost_its_counter_is_resynced(park):
    d, link, keys, cfg = park
    dev = link.add(sim("l002", keys, "light_pole"))
    await dev.hello()
    for _ in range(40):
        dev.send({"type": "heartbeat", "uptime": 1, "heap": 1, "boots": 1, "status": 16, "fw": 10000, "batt": None,
                  "dropped": 0})
    await until(lambda: d.sessions.by_id["l002"].window.top >= 40, what="heartbeats")
    top = d.sessions.by_id["l002"].window.top
    dev.lose_counter()
    w = await dev.hello()
    assert dev.resyncs == 1 and w["echo"] == dev.nonce
    assert dev.seq > top + 1
    assert d.sessions.counters["resync"] == 1
    # an old hello replayed again and again gets at most one resync a second
    old = dev.frame({"type": "hello", "role": 2, "fw": 1, "caps": 0, "nonce": b"12345678"}, seq=3)
    for _ in range(5):
        link.write(old)
    await until(lambda: d.sessions.counters["resync"] + d.sessions.counters["resync_suppressed"] == 6,
                what="replayed hellos handled")
    assert d.sessions.counters["resync"] <= 3


async def test_commands_ack_nack_and_retransmission(park):
    d, link, keys, cfg = park
    dev = link.add(sim("l001", keys, "light_pole"))
    await dev.hello()
    r = await d.command("l001", {"type": "light_set", "level": 80})
    assert r["result"] == "ok" and dev.commands[-1] == {"type": "light_set", "level": 80, "hold": 0}
    dev.answer = lambda m: (messages.E_BAD_VALUE, "level") if m["type"] == "light_set" else None
    with pytest.raises(CommandFailed) as ei:
        await d.command("l001", {"type": "light_set", "level": 5})
    assert ei.value.code == "bad_value" and ei.value.field == "level"
    dev.answer = lambda m: "silent"
    with pytest.raises(CommandFailed) as ei:
        await d.command("l001", {"type": "reboot", "delay": 5})
    assert ei.value.code == "timeout"
    reboots = [c for c in dev.commands if c["type"] == "reboot"]
    assert len(reboots) == cfg.session.retries  # every try reached the device, each with a new seq


async def test_retransmitted_unlock_opens_once(park):
    d, link, keys, cfg = park
    dev = link.add(sim("k001", keys, "locker"))
    await dev.hello()
    first = {"lost": True}

    def answer(m):
        if m["type"] == "unlock" and first.pop("lost", False):
            return "silent"  # opened, but the ack is lost
        return None

    dev.answer = answer
    r = await d.command("k001", {"type": "unlock", "comp": 2, "reason": "ticket 77"})
    assert r["result"] == "ok" and r["tries"] == 2
    opened = [c for c in dev.commands if c["type"] == "unlock"]
    assert len(opened) == 1 and opened[0]["comp"] == 2 and opened[0]["reason"] == "ticket 77"


async def test_command_queue_is_bounded(park):
    d, link, keys, cfg = park
    dev = link.add(sim("l001", keys, "light_pole"))
    await dev.hello()
    dev.answer = lambda m: "silent"
    futs = [d.sessions.command("l001", {"type": "light_set", "level": i, "hold": 0}) for i in range(40)]
    busy = [f for f in futs if f.done() and isinstance(f.exception(), CommandFailed) and f.exception().code == "busy"]
    assert len(busy) == 40 - 4 - cfg.session.queue
    for f in futs:
        f.cancel()


async def test_replayed_old_hello_changes_no_session_state(tmp_path):
    """Issue 9.4: a captured hello replayed later (here on a second link) must not stall or redirect downlink."""
    link, other = await SimLink.tcp_server(), await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"},
                                            {"type": "tcp", "url": other.url, "name": "vb1"}]))
    keys = provision(cfg, [("l001", "light_pole")])
    async with running(cfg) as d:
        await connected(link)
        await connected(other)
        dev = link.add(sim("l001", keys, "light_pole"))
        first_seq = dev.seq
        await dev.hello()
        captured = dev.frame({"type": "hello", "role": 2, "fw": dev.fw, "caps": 0, "nonce": dev.nonce}, seq=first_seq)
        for _ in range(3):
            dev.send({"type": "heartbeat", "uptime": 1, "heap": 1, "boots": 1, "status": 16, "fw": dev.fw,
                      "batt": None, "dropped": 0})
        s = d.sessions.by_id["l001"]
        await until(lambda: s.window.top >= first_seq + 3, what="heartbeats")
        other.write(captured)  # the attacker's copy arrives on another link
        await until(lambda: d.sessions.counters["resync"] == 1, what="replay seen")
        assert s.welcomed and s.link.name == "vb0"
        r = await d.command("l001", {"type": "light_set", "level": 42})
        assert r["result"] == "ok" and dev.commands[-1]["level"] == 42
    await link.close()
    await other.close()


async def test_acks_held_by_one_commit_go_out_in_slices_with_the_links_read_in_between():
    """A group commit under load holds hundreds of events: their acks are sent ACK_SLICE at a time, so
    a motion frame read meanwhile waits for one slice, not for all of them (docs/benchmarks.md, overload)."""
    import collections

    from gateway.session import ACK_SLICE, Counters, Sessions

    ss = object.__new__(Sessions)  # only the ack path: no registry, no links
    ss.counters, ss._waiting, ss._due, ss._sending = Counters(), {}, collections.deque(), False
    sent, between = [], []

    class Dev:
        id = "k001"

        def send(self, msg):
            sent.append(msg["ref"])

    loop = asyncio.get_running_loop()
    commit = loop.create_future()
    for ref in range(5 * ACK_SLICE + 3):
        ss._ack_when_stored(Dev(), {"type": "ack", "ref": ref}, commit)
    assert list(ss._waiting) == [commit] and len(commit._callbacks) == 1  # one callback per commit
    commit.set_result(None)
    for _ in range(8):
        await asyncio.sleep(0)
        between.append(len(sent))
    assert sent == list(range(5 * ACK_SLICE + 3))  # all, in order
    assert between[:6] == [ACK_SLICE * k for k in range(1, 6)] + [5 * ACK_SLICE + 3]

    failed = loop.create_future()
    ss._ack_when_stored(Dev(), {"type": "ack", "ref": 999}, failed)
    failed.set_exception(OSError("disk full"))
    await asyncio.sleep(0)
    assert 999 not in sent and ss.counters["event_not_stored"] == 1  # never acked when not stored


async def test_an_ack_that_cannot_be_sent_does_not_hold_back_the_ones_after_it():
    import collections

    from gateway.events import EventBus
    from gateway.session import Counters, Sessions

    ss = object.__new__(Sessions)
    ss.counters, ss._waiting, ss._due, ss._sending = Counters(), {}, collections.deque(), False
    ss.faults = EventBus().faults
    sent = []

    class Dev:
        def __init__(self, did, broken=False):
            self.id, self.broken = did, broken

        def send(self, msg):
            if self.broken:
                raise OSError("the downlink ceiling could not be stored")
            sent.append((self.id, msg["ref"]))

    commit = asyncio.get_running_loop().create_future()
    ss._ack_when_stored(Dev("k001", broken=True), {"type": "ack", "ref": 1}, commit)
    ss._ack_when_stored(Dev("k002"), {"type": "ack", "ref": 2}, commit)
    commit.set_result(None)
    await asyncio.sleep(0)
    later = asyncio.get_running_loop().create_future()
    ss._ack_when_stored(Dev("k003"), {"type": "ack", "ref": 3}, later)
    later.set_result(None)
    await asyncio.sleep(0)
    assert sent == [("k002", 2), ("k003", 3)] and not ss._sending
    assert ss.faults.counts["session_OSError"] == 1
