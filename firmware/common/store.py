"""Small durable state on flash under /state: values and append-only logs.

Values are JSON files replaced atomically (write a temp file, rename), so a
brown-out leaves either the old or the new value. Logs (common.storelog) are JSON
lines; a torn last line after a brown-out is skipped when read.
"""

import json
import os


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    """Replace a file atomically: a brown-out leaves the old or the new file, never half of one."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    try:
        os.rename(tmp, path)
    except OSError:  # FAT cannot rename over a file; LittleFS (the ESP32 default) can
        os.remove(path)
        os.rename(tmp, path)


class Store:
    def __init__(self, root="/state"):
        self.root = root
        try:
            os.mkdir(root)
        except OSError:
            pass

    def _path(self, key):
        return "%s/%s.%s" % (self.root, key, "json")

    def get(self, key, default=None):
        try:
            with open(self._path(key)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return default

    def put(self, key, value):
        write_json(self._path(key), value)

    def delete(self, key):
        try:
            os.remove(self._path(key))
        except OSError:
            pass

    def log(self, name, limit=64):
        """The append log `name`, keeping at most `limit` records (oldest dropped first): a
        common.storelog.Log, imported on first use (a board without one holds none of its code)."""
        from common.storelog import Log
        return Log("%s/%s.%s" % (self.root, name, "log"), limit)
