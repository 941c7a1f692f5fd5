"""SPEC.md names every code the implementation uses, with the same number."""

import re
from pathlib import Path

from protocol import messages, names

SPEC = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()


def test_every_code_table_is_in_the_spec():
    for table in (names.NACK_CODES, names.ALARMS, names.FAULTS, names.ACCESS, names.CAPS, names.RESET_CAUSES,
                  names.LIGHT_STATES, names.UPDATE_KINDS, names.UPDATE_STATES, names.UPDATE_REASONS):
        for number, name in table.items():
            assert re.search(rf"\b{number} {name}\b", SPEC), f"{number} {name} missing from SPEC.md"


def test_every_message_type_is_in_the_spec_table():
    for code, (name, _, fields) in messages.SCHEMAS.items():
        row = re.search(rf"^\| {code} \| {name} \|.*$", SPEC, re.M)
        assert row, name
        for f in fields:
            assert f[0] in row.group(0), f"{name}.{f[0]} missing from its SPEC row"
