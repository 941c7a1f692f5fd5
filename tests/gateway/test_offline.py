"""Liveness: a silent device goes offline after its expected interval; a sleeping container does not."""

from gwharness import connected, load, provision, running, sim, until, write_config

from sim.devsim import SimLink


async def test_silent_pole_goes_offline_sleeping_container_stays_online(tmp_path):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}], roles="""
[roles.locker]
heartbeat = 1
offline_factor = 1.5
offline_grace = 0.2
"""))
    keys = provision(cfg, [("k001", "locker"), ("c001", "container_sensor")])
    pole_like = link.add(sim("k001", keys, "locker"))
    bin_ = link.add(sim("c001", keys, "container_sensor"))
    async with running(cfg) as d:
        await connected(link)
        events = []
        d.subscribe(events.append)
        await pole_like.hello()
        await bin_.hello()
        bin_.send({"type": "fill", "fill": 40, "temp": 12, "batt": 180})  # then it sleeps for hours
        k, c = d.sessions.by_id["k001"], d.sessions.by_id["c001"]
        assert k.online and c.online
        await until(lambda: not k.online, timeout=10, what="locker offline")
        assert c.online, "a container that sleeps between wakes must not be reported offline"
        assert {"kind": "offline", "device": "k001"} in events
        # hours later (the sweep is given the time): still inside its 6 h heartbeat window
        assert d.sessions.sweep(c.last_seen + 5 * 3600) == []
        assert c.online
        # past 2.5 heartbeats plus grace it is offline, and its next wake brings it back
        assert d.sessions.sweep(c.last_seen + 16 * 3600) == ["c001"]
        assert not c.online
        bin_.send({"type": "fill", "fill": 41, "temp": 12, "batt": 180})
        await until(lambda: c.online, what="container back online")
        assert {"kind": "online", "device": "c001"} in events
    await link.close()
