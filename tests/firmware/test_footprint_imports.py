"""bench_footprint's per-module import table: the order it imports in and what it measures."""

import pytest

from benchmarks import bench_footprint as bf
from sim import mpvm
from sim import testbed as fw


@pytest.mark.parametrize("role", bf.ROLES)
def test_import_order_has_every_module_once_after_its_dependencies(tmp_path, role):
    img = fw.deploy_tree(tmp_path / "img", role, "x001", {}, mpy=False)
    deps = bf._module_deps(img / "lib")
    order = bf._import_order(deps, bf.import_roots(role))
    assert len(order) == len(set(order))
    assert {"protocol.crc16", "common.session", role + ".app", role} <= set(order)
    for i, m in enumerate(order):
        assert set(deps[m]) <= set(order[:i]), m
    assert "protocol.codes" in deps["protocol.messages"] and "protocol" in deps["protocol.messages"]


@pytest.mark.micropython
@pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup")
def test_import_table_covers_the_image_and_sums_to_the_import_cost():
    rows = bf.import_table("container_sensor", "py", repeat=1, batches=1)
    names = [r["module"] for r in rows]
    assert names[-1] == "container_sensor.app" and "common.runtime" in names
    assert all(r["heap"] > 0 and r["us"] >= 0 for r in rows)
    total = sum(r["heap"] for r in rows)
    # one import of everything, measured the same way (after a return to the event loop)
    assert abs(total - bf.import_cost("container_sensor", "py")) < 0.1 * total
