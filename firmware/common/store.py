"""Small durable state on flash under /state: values and append-only logs.

Values are JSON files replaced atomically (write a temp file, rename), so a
brown-out leaves either the old or the new value. Logs are JSON lines; a torn
last line after a brown-out is skipped when read.
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
        """The append log `name`, keeping at most `limit` records (oldest dropped first)."""
        return Log("%s/%s.%s" % (self.root, name, "log"), limit)


class Log:
    """Records kept in order on flash until the owner drops them (e.g. once acknowledged)."""

    def __init__(self, path, limit):
        self.path = path
        self.limit = limit
        self.lost = 0
        self._n = len(self.peek(limit + 1))

    def __len__(self):
        return self._n

    def append(self, value):
        """Add a record; returns False if the oldest had to be dropped to make room."""
        with open(self.path, "a") as f:
            f.write(json.dumps(value))
            f.write("\n")
        self._n += 1
        if self._n > self.limit:
            self.drop(self._n - self.limit)
            self.lost += 1
            return False
        return True

    def peek(self, n):
        """The oldest n records."""
        out = []  # type: list
        try:
            with open(self.path) as f:
                for line in f:
                    if len(out) >= n:
                        break
                    try:
                        out.append(json.loads(line))
                    except ValueError:  # torn write
                        pass
        except OSError:
            pass
        return out

    def drop(self, n):
        """Remove the oldest n records."""
        rest = []
        try:
            with open(self.path) as f:
                i = 0
                for line in f:
                    try:
                        json.loads(line)
                    except ValueError:  # torn write: neither a record nor counted
                        continue
                    if i >= n:
                        rest.append(line if line.endswith("\n") else line + "\n")
                    i += 1
        except OSError:
            return
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            for line in rest:
                f.write(line)
        try:
            os.rename(tmp, self.path)
        except OSError:
            os.remove(self.path)
            os.rename(tmp, self.path)
        self._n = len(rest)
