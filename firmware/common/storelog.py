"""Append-only logs on flash (Store.log): JSON lines, a torn last line after a brown-out
skipped when read. Its own module so that a board whose App keeps no log holds none of
this code or its names (docs/firmware.md#footprint).
"""

import json
import os


class Log:
    """Records kept in order on flash until the owner drops them (e.g. once acknowledged)."""

    def __init__(self, path, limit):
        self.path = path
        self.limit = limit
        self.lost = 0
        self._n = len(self.peek(limit + 1))

    def __len__(self):
        return self._n

    def append(self, rec):
        """Add a record; returns False if the oldest had to be dropped to make room."""
        with open(self.path, "a") as f:
            f.write(json.dumps(rec))
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
