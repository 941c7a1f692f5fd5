"""The one reader of link-key files, for every tool that reads one (gateway CLI, registry import, park-device).

SPEC.md section 1: a link key is exactly 32 bytes. A key file holds them raw, or
as 64 hex characters (whitespace around them allowed), and is readable by its
owner alone: a key that others can read is no longer a secret, so such a file
is refused instead of used. Portable: the same code runs on a board, which has
no other users, so there only the size is checked.
"""

import binascii
import os
import sys

from protocol.errors import ProtocolError

KEY_LEN = 32
_MODE_OTHERS = 0o077  # any group or other permission bit
_MAX_FILE = 4 * KEY_LEN  # a key file is small; do not read a wrong, large file whole
_USERS = sys.implementation.name != "micropython"  # file modes mean something only on a host


class KeyFileError(ProtocolError):
    """A key file or hex key that is not an owner-only, exactly 32-byte key; `where` names it."""

    code = "key_file"

    def __init__(self, where, detail, hint=""):
        super().__init__("%s: %s" % (where, detail))
        self.where = where
        self.why = detail  # without the where, for tools that name it themselves
        self.hint = hint


def key_from_hex(text, where="key_hex"):
    """A 32-byte key from exactly 64 hex characters (what `key_hex` fields and hex key files hold)."""
    if type(text) is not str:
        raise KeyFileError(where, "must be a string of %d hex characters" % (2 * KEY_LEN))
    text = text.strip()
    if len(text) != 2 * KEY_LEN:
        raise KeyFileError(where, "must be %d hex characters (a %d-byte key), got %d characters"
                           % (2 * KEY_LEN, KEY_LEN, len(text)))
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise KeyFileError(where, "is not hex (0-9, a-f)")


def parse_key(data, where="key"):
    """A 32-byte key from a key file's bytes: 32 raw bytes, or 64 hex characters."""
    if len(data) == KEY_LEN:
        if _all_hex(data):
            # 32 hex characters are a 16-byte key written as text, not 32 random bytes
            raise KeyFileError(where, "holds %d hex characters (a %d-byte key); a key is %d bytes: %d raw bytes "
                               "or %d hex characters" % (KEY_LEN, KEY_LEN // 2, KEY_LEN, KEY_LEN, 2 * KEY_LEN))
        return bytes(data)
    try:
        text = data.decode()
    except UnicodeError:
        text = None
    if text is not None and len(text.strip()) == 2 * KEY_LEN:
        return key_from_hex(text, where)
    raise KeyFileError(where, "must hold a %d-byte key: %d raw bytes or %d hex characters, got %d bytes"
                       % (KEY_LEN, KEY_LEN, 2 * KEY_LEN, len(data)),
                       "park-device provision writes key files of the right size")


def check_private(path):
    """Refuse a file that its group or others may read or write (like ssh does with private keys)."""
    try:
        mode = os.stat(path)[0]
    except OSError as e:
        raise KeyFileError(path, "cannot read: %s" % _why(e))
    if mode & 0o170000 != 0o100000:
        raise KeyFileError(path, "is not a regular file")
    if _USERS and mode & _MODE_OTHERS:
        raise KeyFileError(path, "holds a key but is readable by others (mode %o: group or others have access)"
                           % (mode & 0o777),
                           "chmod 600 %s" % path)


def read_key_file(path):
    """The 32-byte key in `path`; KeyFileError says what is wrong with the file and how to fix it."""
    check_private(path)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise KeyFileError(path, "cannot read: %s" % _why(e))
    return parse_key(data, path)


def _all_hex(data):
    for b in data:
        if not (48 <= b <= 57 or 97 <= b <= 102 or 65 <= b <= 70):
            return False
    return True


def _why(e):
    return getattr(e, "strerror", None) or str(e)
