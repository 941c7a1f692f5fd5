"""protocol/messages.py keeps its schemas as a bytes table with each entry written out in a
comment: the comments are what a reviewer reads, so they must say what the bytes say."""

import re
from pathlib import Path

from protocol import messages

SRC = (Path(__file__).resolve().parents[2] / "protocol" / "messages.py").read_text()
KINDS = "UINBTYWC"
DIRS = ("UP", "DOWN", "BOTH")


def _comments():
    """{code: (name, direction, ((field, kind, lo, hi), ...))} from the comments inside `_S = (...)`."""
    body = SRC[SRC.index("\n_S = (\n"):]
    body = body[:body.index("\n)\n")]
    text = "\n".join(ln.strip()[1:].strip() for ln in body.splitlines() if ln.strip().startswith("#"))
    out = {}
    for m in re.finditer(r"^(\d+) (\w+) (UP|DOWN|BOTH): (.*?)(?=^\d+ |\Z)", text, re.M | re.S):
        fields = []
        for f in re.split(r",\s*", m.group(4).strip()):
            fname, kind, rng = f.split()
            lo, hi = rng.split("..")
            fields.append((fname, KINDS.index(kind), int(lo), int(hi)))
        out[int(m.group(1))] = (m.group(2), DIRS.index(m.group(3)), tuple(fields))
    return out


def _entry(code, name, d, fields):
    """The bytes literal an entry's comment stands for (what to paste when adding or changing one)."""
    def ix(seq, x, what):
        assert x in seq, f"{x!r} is not in {what}: append it there first"
        return seq.index(x)
    b = [code, d, ix(messages._NAMES, name, "_NAMES"), len(fields)]
    for fname, kind, lo, hi in fields:
        b += [ix(messages._NAMES, fname, "_NAMES"), kind, ix(messages._BOUNDS, lo, "_BOUNDS"),
              ix(messages._BOUNDS, hi, "_BOUNDS")]
    return 'b"' + "".join("\\x%02x" % x for x in b) + '"'


def test_every_entry_of_the_table_is_its_comment():
    said = _comments()
    for code, s in said.items():
        assert messages.SCHEMAS.get(code) == s, f"entry {code} differs from its comment, which says {_entry(code, *s)}"
    assert list(said) == list(messages.SCHEMAS)


def test_the_table_holds_every_message_once_and_nothing_else():
    t = messages._S
    o = 0
    seen = []
    while o < len(t):
        seen.append(t[o])
        o += 4 + 4 * t[o + 3]
    assert o == len(t)
    assert sorted(seen) == sorted(set(seen)) == sorted(messages.SCHEMAS)
    assert len(set(messages.TYPES)) == len(messages.SCHEMAS)


def test_the_host_names_match_the_device_private_consts():
    """messages_host and cose_host give a host the names a device keeps as private const()s; same values."""
    from protocol import cose
    assert (messages.U, messages.I, messages.N, messages.B, messages.T, messages.Y, messages.W, messages.C) == \
        tuple(range(8))
    assert (messages.U32, messages.U40, messages.I32, messages.UP_PAYLOAD_MAX) == (2**32 - 1, 2**40 - 1, 2**31 - 1, 20)
    assert (cose.TAG_LEN, cose.MAX_SEQ, cose.PROTECTED, cose.ALG_HMAC_256_64) == (8, 0xFFFFFFFF, b"\xa1\x01\x04", 4)
    assert cose._MAC0_PREFIX == b"\x84\x64MAC0\x43" + cose.PROTECTED
    assert cose._LEAD == b"\x84\x43" + cose.PROTECTED + b"\xa2\x04"
    assert messages.ROLES == {v: k for k, v in messages.ROLE_IDS.items()}
