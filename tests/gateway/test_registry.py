"""Registry: identity and keys in SQLite, private file modes, typed refusals, import/export."""

import json
import os
import stat

import pytest

from gateway.registry import (DuplicateDevice, DuplicateKey, InvalidDevice, Registry, RegistryError,
                              UnknownDevice, write_private)

K1 = bytes(range(32))
K2 = bytes(range(1, 33))


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_add_get_and_private_modes(tmp_path):
    path = tmp_path / "state" / "registry.sqlite"
    with Registry(str(path)) as reg:
        reg.add("l001", "light_pole", "stadtpark", K1, position="path-a/3")
        d = reg.get("l001")
        assert (d.role, d.site, d.key, d.position) == ("light_pole", "stadtpark", K1, "path-a/3")
        assert K1.hex() not in repr(d) and "32 bytes" in repr(d)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_duplicate_id_and_key_are_refused(tmp_path):
    with Registry(str(tmp_path / "r.sqlite")) as reg:
        reg.add("l001", "light_pole", "stadtpark", K1)
        with pytest.raises(DuplicateDevice, match="l001"):
            reg.add("l001", "light_pole", "stadtpark", K2)
        with pytest.raises(DuplicateKey, match="already belongs to device l001"):
            reg.add("l002", "light_pole", "stadtpark", K1)
        reg.add("l001", "light_pole", "nordpark", K2, replace=True)
        assert reg.get("l001").key == K2 and reg.get("l001").site == "nordpark"
        reg.remove("l001")
        with pytest.raises(UnknownDevice):
            reg.get("l001")


@pytest.mark.parametrize("args,needle", [
    (("toolongid9", "light_pole", "s", K1), "device id"),
    (("l001", "toaster", "s", K1), "role"),
    (("l001", "light_pole", "Bad Site", K1), "site"),
    (("l001", "light_pole", "s", b"short"), "exactly 32 bytes"),
])
def test_invalid_devices(tmp_path, args, needle):
    with Registry(str(tmp_path / "r.sqlite")) as reg:
        with pytest.raises(InvalidDevice, match=needle):
            reg.add(*args)


def test_counters_survive_reopen(tmp_path):
    p = str(tmp_path / "r.sqlite")
    with Registry(p) as reg:
        reg.add("c001", "container_sensor", "stadtpark", K1)
        reg.store_ceiling("c001", 256)
        reg.store_windows([("c001", 77, 0b1011)], [(123.0, 10203, "c001")])
    with Registry(p) as reg:
        assert reg.counters("c001") == (256, 77, 0b1011)
        assert reg.get("c001").fw == 10203 and reg.get("c001").last_seen == 123.0


def test_import_file_checks_mode_and_content(tmp_path):
    f = tmp_path / "prov.json"
    write_private(str(f), json.dumps([{"id": "k001", "role": "locker", "site": "stadtpark", "key_hex": K1.hex(),
                                       "position": None}]))
    assert mode(f) == 0o600
    with Registry(str(tmp_path / "r.sqlite")) as reg:
        assert reg.import_file(str(f)) == ["k001"]
        assert reg.get("k001").key == K1
        os.chmod(f, 0o644)
        with pytest.raises(RegistryError, match="readable by others"):
            reg.import_file(str(f), replace=True)
        os.chmod(f, 0o600)
        f.write_text('{"id": "k002", "role": "locker", "site": "stadtpark"}')
        with pytest.raises(RegistryError, match="entry 0: missing field 'key_hex'"):
            reg.import_file(str(f))
        write_private(str(f), json.dumps([
            {"id": "k003", "role": "locker", "site": "stadtpark", "key_hex": K2.hex()},
            {"id": "k004", "role": "locker", "site": "stadtpark", "key_hex": K1.hex()}]))
        with pytest.raises(DuplicateKey, match="k004.*belongs to device k001"):
            reg.import_file(str(f))
        with pytest.raises(UnknownDevice):
            reg.get("k003")  # nothing of a refused file is written
        exported = reg.export()
        assert exported == [{"id": "k001", "role": "locker", "site": "stadtpark", "position": None}]
        assert reg.export(with_keys=True)[0]["key_hex"] == K1.hex()


def test_downlink_counter_never_reuses_a_number_after_restart(tmp_path):
    from gateway.registry import RegistryWriter
    from gateway.downcounter import DownCounter

    p = str(tmp_path / "r.sqlite")
    with Registry(p) as reg:
        reg.add("l001", "light_pole", "stadtpark", K1)
    w = RegistryWriter(p)
    c = DownCounter("l001", None, w, k=64)
    used = [c.take() for _ in range(1000)]  # the writer thread keeps the ceiling ahead
    assert used == list(range(1000))
    w.close()
    with Registry(p) as reg:  # a restart (or kill -9: every ceiling was committed before use)
        stored = reg.counters("l001")[0]
    assert stored >= 1000
    w2 = RegistryWriter(p)
    c2 = DownCounter("l001", stored, w2, k=64)
    assert c2.take() >= 1000
    w2.close()


def test_import_is_one_transaction(tmp_path):
    """10,000 devices must not cost 10,000 fsyncs (issue 13): the whole file is one transaction."""
    from gateway.registry import write_private

    src = str(tmp_path / "devices.json")
    write_private(src, json.dumps([{"id": "c%03d" % i, "role": "container_sensor", "site": "stadtpark",
                                    "key_hex": "%064x" % (i + 1)} for i in range(50)]))
    with Registry(str(tmp_path / "state" / "registry.sqlite")) as reg:
        statements = []
        reg.db.set_trace_callback(statements.append)
        assert len(reg.import_file(src)) == 50
        reg.db.set_trace_callback(None)
        assert sum(s.startswith("BEGIN") for s in statements) == 1
        assert len(reg.all()) == 50


def test_ceilings_asked_together_share_one_commit(tmp_path):
    import threading

    from gateway.registry import RegistryWriter

    path = str(tmp_path / "state" / "registry.sqlite")
    with Registry(path) as reg:
        for i in range(20):
            reg.add("c%03d" % i, "container_sensor", "stadtpark", bytes([i + 1]) * 32)
    w = RegistryWriter(path)
    try:
        gate = threading.Event()
        w._exec.submit(gate.wait)  # the writer thread is busy (an fsync in progress)
        statements = []
        w._exec.submit(lambda: w._db.set_trace_callback(statements.append))
        futs = [w.store_ceiling("c%03d" % i, 256) for i in range(20)]
        gate.set()
        for f in futs:
            f.result(timeout=10)
        assert sum(s.startswith("BEGIN") for s in statements) == 1
    finally:
        w.close()
    with Registry(path) as reg:
        assert all(reg.counters("c%03d" % i)[0] == 256 for i in range(20))


def test_start_up_raises_every_downlink_ceiling_in_one_durable_write_and_makes_keys_on_demand(tmp_path):
    """10,000 devices at start-up: one writer call for all first ceilings (not a Future each), and
    each device's MAC key schedule only at its first frame; a restart still never reuses a number."""
    from gwharness import load, write_config

    from gateway.devices import DeviceTable
    from gateway.registry import RegistryWriter
    from protocol import codec, cose

    cfg = load(write_config(str(tmp_path)))
    path = str(tmp_path / "registry.sqlite")
    keys = {"c%03d" % i: i.to_bytes(2, "big") * 16 for i in range(300)}
    with Registry(path) as reg:
        for did, key in keys.items():
            reg.add(did, "container_sensor", "stadtpark", key)

    class Counting(RegistryWriter):
        calls: list = []

        def store_ceilings(self, rows):
            self.calls.append(len(rows))
            return super().store_ceilings(rows)

    for restart, ceiling in ((0, 256), (1, 512)):
        with Registry(path) as reg:
            w = Counting(path)
            try:
                table = DeviceTable(cfg, reg, w)
                assert Counting.calls[restart:] == [300]
                s = table.by_id["c007"]
                assert s._mac is None
                assert s.counter.take() == ceiling - 256  # waits for the shared commit, then counts on
                frame = codec.pack(cose.Mac(keys["c007"]), cose.DOWN, b"c007", 9, {"type": "time", "time": 5})
                got = codec.open_frame(frame[:-1], cose.DOWN, table.mac_for)
                assert (got.kid, got.seq, got.msg) == (b"c007", 9, {"type": "time", "time": 5})
                assert s._mac is not None and s.mac is s._mac and table.by_id["c008"]._mac is None
            finally:
                w.close()
            assert {c[0] for c in reg.all_counters().values()} == {ceiling}
