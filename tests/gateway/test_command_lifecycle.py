"""Command lifecycle (issue 9.2, session and daemon side).

A command's deadline runs from the moment it is asked; it is cancelled when the
deadline passes or its asker goes away, never carried out after the asker was
told it failed, and waits for an offline device only when asked to (queue_for),
visibly and cancellably.
"""

import asyncio
import time

import pytest

from gwharness import connected, load, provision, running, sim, until, write_config

from sim.devsim import SimLink
from gateway.session import CommandFailed

UNLOCK = {"type": "unlock", "comp": 3, "reason": "ticket 1"}


@pytest.fixture
async def park(tmp_path):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}]))
    keys = provision(cfg, [("l001", "light_pole"), ("k001", "locker")])
    async with running(cfg) as d:
        await connected(link)
        yield d, link, keys, cfg
    await link.close()


async def test_unlock_to_an_offline_locker_fails_at_once_and_is_never_sent_later(park):
    d, link, keys, cfg = park
    t0 = time.monotonic()
    with pytest.raises(CommandFailed) as ei:
        await asyncio.wait_for(d.command("k001", dict(UNLOCK)), 5)
    assert ei.value.code == "offline" and time.monotonic() - t0 < 1
    assert d.device("k001")["commands"] == []
    dev = link.add(sim("k001", keys, "locker"))
    await dev.hello()
    await asyncio.sleep(0.5)
    assert not [c for c in dev.commands if c["type"] == "unlock"]


async def _busy_pole(d, link, keys):
    """A pole that answers nothing, with its four in-flight slots taken."""
    dev = link.add(sim("l001", keys, "light_pole"))
    await dev.hello()
    await until(lambda: any(c["type"] == "light_profile" for c in dev.commands), what="profile")
    dev.answer = lambda m: "silent"
    blockers = [d.sessions.command("l001", {"type": "light_set", "level": i, "hold": 0}) for i in range(4)]
    return dev, blockers


async def test_deadline_runs_from_asking_not_from_the_first_transmission(park):
    d, link, keys, cfg = park
    dev, blockers = await _busy_pole(d, link, keys)
    t0 = time.monotonic()
    with pytest.raises(CommandFailed) as ei:
        await d.command("l001", {"type": "light_set", "level": 99}, deadline=time.time() + 0.3)
    assert ei.value.code == "timeout" and time.monotonic() - t0 < 1.0
    assert d.sessions.by_id["l001"].queue == type(d.sessions.by_id["l001"].queue)()
    await asyncio.gather(*blockers, return_exceptions=True)  # the slots free up (retries used up)
    await asyncio.sleep(0.3)
    assert not [c for c in dev.commands if c.get("level") == 99], "sent after its asker was told it failed"


async def test_asker_going_away_cancels_the_command_and_frees_its_slot(park):
    d, link, keys, cfg = park
    dev, blockers = await _busy_pole(d, link, keys)
    s = d.sessions.by_id["l001"]
    asker = asyncio.create_task(d.command("l001", {"type": "light_set", "level": 98}))
    await until(lambda: len(s.queue) == 1, what="queued")
    asker.cancel()
    await asyncio.gather(asker, return_exceptions=True)
    await asyncio.sleep(0)
    assert len(s.queue) == 0 and d.sessions.counters["command_cancelled"] == 1
    await asyncio.gather(*blockers, return_exceptions=True)
    await asyncio.sleep(0.3)
    assert not [c for c in dev.commands if c.get("level") == 98]


async def test_queue_for_waits_visibly_and_can_be_cancelled(park):
    d, link, keys, cfg = park
    waiting = asyncio.create_task(d.command("k001", dict(UNLOCK, comp=1), queue_for=30))
    dropped = asyncio.create_task(d.command("k001", dict(UNLOCK, comp=2), queue_for=30))
    await until(lambda: len(d.device("k001")["commands"]) == 2, what="both listed")
    listed = d.device("k001")["commands"]
    assert [c["state"] for c in listed] == ["queued", "queued"] and listed[0]["queue_for"] == 30
    assert listed[0]["deadline"] >= time.time() + 29
    d.cancel("k001", listed[1]["id"])
    with pytest.raises(CommandFailed) as ei:
        await dropped
    assert ei.value.code == "cancelled"
    with pytest.raises(LookupError):
        d.cancel("k001", listed[1]["id"])
    dev = link.add(sim("k001", keys, "locker"))
    await dev.hello()
    r = await asyncio.wait_for(waiting, 5)
    assert r["result"] == "ok"
    assert [c["comp"] for c in dev.commands if c["type"] == "unlock"] == [1]
    assert d.device("k001")["commands"] == []


async def test_queued_for_command_expires_unsent_at_its_deadline(park):
    d, link, keys, cfg = park
    with pytest.raises(CommandFailed) as ei:
        await d.command("k001", dict(UNLOCK), queue_for=0.3)
    assert ei.value.code == "timeout" and "not reachable" in str(ei.value)
    dev = link.add(sim("k001", keys, "locker"))
    await dev.hello()
    await asyncio.sleep(0.3)
    assert not [c for c in dev.commands if c["type"] == "unlock"]


class _Bin:
    """A battery bin's session as the downlink sees it: a BLE link that holds only while the bin is awake."""

    def __init__(self):
        import collections
        from types import SimpleNamespace
        self.id = "c001"
        self.link = SimpleNamespace(reachable=True)
        self.online = self.welcomed = True
        self.queue = collections.deque()
        self.inflight = {}
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)
        return len(self.sent)


async def test_command_sent_before_the_connection_ended_waits_for_the_next_one():
    import collections
    from types import SimpleNamespace
    from gateway.downlink import Downlink
    cfg = SimpleNamespace(queue=8, retries=3, retry_base=0.01, retry_max=0.02, command_timeout=5)
    counters = collections.Counter()
    s = _Bin()
    dl = Downlink(cfg, {"c001": s}, counters)
    f = dl.submit(s, {"type": "reboot", "delay": 0}, queue_for=5)
    assert len(s.sent) == 1
    s.link.reachable = False  # the bin went back to sleep before it answered
    await asyncio.sleep(0.2)  # many retry periods
    assert not f.done(), f.exception() if f.done() else None
    assert len(s.sent) == 1 and counters["command_timeout"] == 0
    s.link.reachable = True  # its next wake: the session pumps what waits
    dl.pump(s)
    assert len(s.sent) == 2 and s.sent[-1]["type"] == "reboot"
    seq = len(s.sent)
    dl.answer(s, {"type": "ack", "ref": seq})
    assert (await f)["result"] == "ok"
