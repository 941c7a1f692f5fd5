"""Load the golden vectors in either VM (MicroPython has json and os, no pathlib)."""

import json
import os


def vectors_dir():
    for d in ("/vectors", "protocol/vectors"):
        try:
            os.stat(d)
            return d
        except OSError:
            pass
    here = __file__.rsplit("/", 1)[0]
    return here + "/../../../protocol/vectors"


def load_all():
    d = vectors_dir()
    names = [n for n in os.listdir(d) if n.endswith(".json")]
    names.sort()
    out = []
    for n in names:
        with open(d + "/" + n) as f:
            out.append(json.load(f))
    return out


def unhex(s):
    import binascii

    return binascii.unhexlify(s)


def from_json(decoded, bytes_fields):
    m = {}
    for k in decoded:
        v = decoded[k]
        m[k] = unhex(v) if k in bytes_fields else v
    return m


def schemas():
    """protocol.messages' table as {code: (name, direction, fields)} in either VM (SCHEMAS is host-only)."""
    from protocol import messages
    out = {}
    for code in range(256):
        s = messages._schema(code)
        if s is not None:
            out[code] = s
    return out
