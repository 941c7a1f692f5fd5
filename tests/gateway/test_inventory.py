"""The retained device inventory: what it documents, and that a burst of hellos does not rebuild it each time."""

import types

from gateway import inventory


class Uplink:
    def __init__(self):
        self.sent = []

    def site_state_nowait(self, site, leaf, body):
        self.sent.append((site, leaf, body))
        f = types.SimpleNamespace(add_done_callback=lambda cb: None)
        return f


def dev(did, site, fw=None, position=None, role="light_pole"):
    return types.SimpleNamespace(id=did, site=site, role=role, fw=fw, dev=types.SimpleNamespace(position=position))


def test_documents_per_site_sorted_with_readable_firmware():
    devices = {d.id: d for d in (dev("l002", "stadtpark", 10203, "path-a/2"), dev("l001", "stadtpark"),
                                 dev("c001", "zoo", 100, role="container_sensor"))}
    docs = inventory.documents(devices, "gw1", "0.1.0")
    assert set(docs) == {"stadtpark", "zoo"}
    assert docs["stadtpark"]["devices"] == [
        {"id": "l001", "role": "light_pole", "position": None, "fw": None},
        {"id": "l002", "role": "light_pole", "position": "path-a/2", "fw": "1.2.3"}]
    assert docs["zoo"] == {"gateway": "gw1", "version": "0.1.0", "site": "zoo",
                           "devices": [{"id": "c001", "role": "container_sensor", "position": None, "fw": "0.1.0"}]}


def test_a_hello_republishes_only_when_it_brings_another_firmware(monkeypatch):
    devices = {"l%03d" % i: dev("l%03d" % i, "stadtpark", 100) for i in range(50)}
    up = Uplink()
    inv = inventory.Inventory(up, devices, "gw1", "0.1.0", ["stadtpark"])
    built = []
    real = inventory.documents
    monkeypatch.setattr(inventory, "documents", lambda *a: built.append(1) or real(*a))
    inv.publish()
    assert len(up.sent) == 1 and len(built) == 1
    for did in devices:  # every device says hello again after a power cut, same firmware
        inv.on_event({"kind": "hello", "device": did, "fw": 100})
    assert len(built) == 1 and len(up.sent) == 1
    devices["l007"].fw = 101
    inv.on_event({"kind": "hello", "device": "l007", "fw": 101})
    assert len(built) == 2 and len(up.sent) == 2
    (l007,) = [d for d in up.sent[-1][2]["devices"] if d["id"] == "l007"]
    assert l007["fw"] == "0.1.1"
    devices["n001"] = dev("n001", "stadtpark")  # a device the documents do not know yet
    inv.on_event({"kind": "hello", "device": "n001", "fw": None})
    assert len(built) == 3 and [d["id"] for d in up.sent[-1][2]["devices"]][-1] == "n001"


def test_hellos_with_new_firmware_share_one_publication_in_the_event_loop():
    """After a rollout every device says hello with a new version: one rebuild for the burst, not one each."""
    import asyncio

    devices = {"l%03d" % i: dev("l%03d" % i, "stadtpark", 100) for i in range(50)}
    up = Uplink()
    inv = inventory.Inventory(up, devices, "gw1", "0.1.0", ["stadtpark"])

    async def burst():
        inv.publish()
        for d in devices.values():
            d.fw = 101
            inv.on_event({"kind": "hello", "device": d.id, "fw": 101})
        assert len(up.sent) == 1  # not yet: the burst settles first
        await asyncio.sleep(inventory.SETTLE_S + 0.2)

    asyncio.run(burst())
    assert len(up.sent) == 2
    assert {d["fw"] for d in up.sent[-1][2]["devices"]} == {"0.1.1"}


def test_a_stopping_daemon_publishes_what_a_settling_burst_changed():
    import asyncio

    devices = {"l001": dev("l001", "stadtpark", 100)}
    up = Uplink()
    inv = inventory.Inventory(up, devices, "gw1", "0.1.0", ["stadtpark"])

    async def stop_early():
        inv.publish()
        inv.flush()
        assert len(up.sent) == 1  # nothing pending: nothing sent
        devices["l001"].fw = 102
        inv.on_event({"kind": "hello", "device": "l001", "fw": 102})
        inv.flush()

    asyncio.run(stop_early())
    assert len(up.sent) == 2 and up.sent[-1][2]["devices"][0]["fw"] == "0.1.2"
