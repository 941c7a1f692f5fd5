"""common.ota's modules keep the SPEC numbers they use as private micropython.const names (compiled
into the bytecode: no table on the heap while an update runs); each must equal protocol.codes'."""
import ast
from pathlib import Path

import pytest

from protocol import codes

COMMON = Path(__file__).resolve().parents[2] / "firmware" / "common"
OTA = sorted(COMMON.glob("ota*.py"))
OWN = {"_SPACE_MARGIN"}  # the device's own numbers, not SPEC's


def private_consts(path: Path) -> dict:
    out = {}
    for n in ast.parse(path.read_text()).body:
        if (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", "") == "const"):
            out[n.targets[0].id] = ast.literal_eval(n.value.args[0])
    return out


def test_the_update_is_split_into_its_phases():
    assert {p.stem for p in OTA} >= {"ota", "ota_state", "ota_offer", "ota_rx", "ota_part", "ota_inst", "ota_trial"}


@pytest.mark.parametrize("path", OTA, ids=lambda p: p.stem)
def test_private_constants_equal_protocol_codes(path):
    from common import otaboot
    found = private_consts(path)
    for name, value in found.items():
        if name == "_TRIAL_BOOTS":
            assert value == otaboot.TRIAL_BOOTS, path.name
        elif name not in OWN:
            assert value == getattr(codes, name[1:]), "%s: %s" % (path.name, name)


def test_otaboot_numbers_equal_protocol_codes():
    from common import otaboot
    assert (otaboot._US_ROLLED_BACK, otaboot._UR_TRIAL) == (codes.US_ROLLED_BACK, codes.UR_TRIAL)


def test_the_paths_and_sizes_agree_across_the_modules():
    from common import ota, ota_part, ota_state
    assert ota_state.STAGE == ota.STAGE == ota_part.STAGE == "/ota/stage.json"
    assert ota_state.IMAGE == "/ota/stage.bin"
    assert private_consts(COMMON / "ota_rx.py")["_UPD_CHUNK_MAX"] == codes.UPD_CHUNK_MAX
