"""protocol/park.cddl and the code describe the same wire format (checked with cddl-verifier, offline)."""

import json
from pathlib import Path

import cddl_verifier
import pytest
from hypothesis import given, settings

from protocol import cose, framing, messages, token

from test_properties import MESSAGES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = cddl_verifier.Validator(ROOT / "protocol" / "park.cddl")
VECTORS = [json.loads(p.read_text()) for p in sorted((ROOT / "protocol" / "vectors").glob("*.json"))]
RULE = {"light_set": "light-set", "light_profile": "light-profile", "locker": "locker-state",
        "update_offer": "update-offer", "update_chunk": "update-chunk", "update_commit": "update-commit",
        "update_abort": "update-abort"}
DIRECTION_RULE = {"up": "uplink-message", "down": "downlink-message"}


def ok(data, rule):
    # The protocol's messages have no maps whose keys differ in major type or head length, where
    # length-first order (RFC 8949 4.2.3, ours) and bytewise order (4.2.1, the verifier's) differ.
    r = SCHEMA.validate(data, rule, require_deterministic=True)
    return not r.errors, r


@pytest.mark.parametrize("v", [v for v in VECTORS if v["valid"]], ids=lambda v: v["name"])
def test_valid_vectors_match_the_cddl(v):
    env = bytes.fromhex(v["envelope_hex"])
    payload = bytes.fromhex(v["payload_hex"])
    name = v["decoded"]["type"]
    for data, rule in ((env, "park-envelope"), (payload, DIRECTION_RULE[v["direction"]]),
                       (payload, RULE.get(name, name)), (bytes.fromhex(v["external_aad_hex"]), "park-external-aad"),
                       (cose.mac_structure(bytes.fromhex(v["external_aad_hex"]), payload), "park-mac-structure")):
        good, r = ok(data, rule)
        assert good, f"{v['name']} vs {rule}: {r.format()}"


@pytest.mark.parametrize("v", [v for v in VECTORS if not v["valid"] and v["error"] in ("schema", "unknown_type")],
                         ids=lambda v: v["name"])
def test_schema_invalid_vectors_fail_the_cddl(v):
    env = cose.parse(framing.decode_frame(bytes.fromhex(v["frame_hex"])))
    good, _ = ok(env.payload, DIRECTION_RULE[v["direction"]])
    assert not good


def test_every_message_type_has_a_rule():
    text = (ROOT / "protocol" / "park.cddl").read_text()
    for code, (name, _, fields) in messages.SCHEMAS.items():
        rule = RULE.get(name, name)
        assert f"\n{rule} = [{code}," in text, name


@settings(max_examples=150, deadline=None)
@given(MESSAGES)
def test_generated_messages_match_the_cddl(msg):
    good, r = ok(messages.encode(msg), RULE.get(msg["type"], msg["type"]))
    assert good, r.format()


def test_token_matches_the_cddl():
    t = token.issue(b"k" * 32, "k001", 3, 1795000000, 1795086400, 4242)
    good, r = ok(t, "park-token")
    assert good, r.format()
