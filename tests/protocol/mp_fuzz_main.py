# Runs inside MicroPython: read cases from /cases.json, print outcomes as one JSON line.
import json
import binascii
from fuzz_outcomes import outcomes

with open("/cases.json") as f:
    raw = json.load(f)
cases = [(c[0], binascii.unhexlify(c[1])) for c in raw]
print("@@OUTCOMES " + json.dumps(outcomes(cases)))
