"""What an update holds on the heap, phase by phase (issue 11): the light pole's .mpy files in a
plain MicroPython VM, the update driven through common.ota's phases and each figure taken after a
return to the event loop (benchmarks.bench_update_device.phase_costs, the live data a chip's
collector finds). Before the split, common.ota held 10.3 KiB of code and protocol.codes 1.3 KiB
through every phase (13.3-14.4 KiB in all); the bounds below leave ~1 KiB for qstr pools."""
from pathlib import Path

import pytest

from protocol import codes
from protocol.bundle import ImageHeader, build_image
from sim import mpvm

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup"),
]

KIB = 1024


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> dict:
    from benchmarks import bench_update_device as bu
    work: Path = tmp_path_factory.mktemp("ota-heap")
    files = {d[len("/lib/"):]: b for d, b in bu.artifacts(work, 10001).items() if d.startswith("/lib/")}
    img = build_image(ImageHeader(codes.ROLE_LIGHT_POLE, 10001, 6, 12000, 1, 0, [(p, 0, b"") for p in sorted(files)]),
                      files)
    return bu.phase_costs(work, img, len(files))


def test_receiving_holds_the_state_and_the_receiving_code_only(phases):
    assert phases["chunks"] < 7.5 * KIB, phases
    assert phases["staged_idle"] < phases["staged"], phases  # ota_rx left with the last chunk


def test_the_commit_holds_the_checking_and_installing_code(phases):
    assert max(phases["verify"], phases["install"], phases["switched"]) < 12 * KIB, phases


def test_the_trial_confirmation_holds_less_than_a_transfer(phases):
    assert phases["confirmed"] - phases["dropped"] < 5 * KIB, phases


def test_every_phase_leaves_the_heap(phases):
    # what stays are the qstrs the modules interned (a chip keeps them too, until the reboot)
    assert phases["dropped"] < 2.5 * KIB and phases["end"] < 2.5 * KIB, phases
