"""Pick the software slot before any package is imported, and count trial boots.

/main.py imports it as a top-level module from /lib/common, so `common` and `protocol`
stay unbound until the slot supplies them; only when /ota/boot.json exists, i.e. once
this board has taken an update. The slot becomes the working directory, which the
import path searches first ('' in sys.path, before .frozen and /lib). The factory files in
/lib stay the last resort; common.ota reaches the same functions as common.otaboot. The pointer is one JSON file replaced by
os.rename (atomic on littlefs), so a power cut leaves the old or the new pointer.
See docs/firmware.md, Updates.
"""

import json
import os

PATH = "/ota/boot.json"
TRIAL_BOOTS = 3
"""Boots a new version gets to join the gateway and pass its self-check."""

# SPEC 5.2 numbers (protocol.codes is not imported here: that would bind the factory package)
_US_ROLLED_BACK = 5
_UR_TRIAL = 11

state = None
"""The pointer as this boot chose it: {slot, prev, try, floor, uid, st, why, rep, ...}."""


def read():
    """The pointer, or None (no update ever, or unreadable: the factory files run)."""
    for p in (PATH, PATH + ".new"):  # .new: a rename that fell back to remove-then-rename
        try:
            with open(p) as f:
                v = json.load(f)
            if type(v) is dict:
                return v
        except (OSError, ValueError):
            pass
    return None


def write(p):
    """Replace the pointer atomically (write a new file, rename it over the old one)."""
    tmp = PATH + ".new"
    with open(tmp, "w") as f:
        json.dump(p, f)
    try:
        os.rename(tmp, PATH)
    except OSError:  # a file system whose rename does not replace: read() takes .new meanwhile
        os.remove(PATH)
        os.rename(tmp, PATH)


def rolled_back(p):
    """The pointer after a trial failed: back to the previous slot, outcome to report."""
    q = dict(p)
    q["slot"] = p.get("prev", "")
    q["prev"] = ""
    q["try"] = 0
    q["st"] = _US_ROLLED_BACK
    q["why"] = _UR_TRIAL
    q["rep"] = 1
    return q


def _present(slot):
    try:
        os.stat("/%s/common" % slot)
        return True
    except OSError:
        return False


def boot():
    """Choose this boot's slot; a trial past TRIAL_BOOTS boots switches back by itself."""
    global state
    p = read()
    if p is None:
        return None
    n = p.get("try", 0)
    if n:
        if n > TRIAL_BOOTS or not _present(p.get("slot", "")):
            p = rolled_back(p)
        else:
            p["try"] = n + 1
        write(p)
    slot = p.get("slot", "")
    if slot and _present(slot):
        os.chdir("/" + slot)
    state = p
    return p
