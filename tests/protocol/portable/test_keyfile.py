"""The key-file reader; portable (CPython and MicroPython, where file modes carry no permission bits)."""

import os

from protocol.keyfile import KEY_LEN, KeyFileError, key_from_hex, parse_key, read_key_file

try:
    import tempfile
    PATH = tempfile.gettempdir() + "/park-keyfile-test-%d.bin" % os.getpid()
except ImportError:  # MicroPython: the VM's file system is in memory
    PATH = "/keyfile-test.bin"

KEY = bytes(range(200, 232))


def raises(fn, *args):
    try:
        fn(*args)
    except KeyFileError as e:
        return e
    raise AssertionError("did not raise KeyFileError")


def write(data):
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        os.chmod(PATH, 0o600)
    except AttributeError:
        pass  # MicroPython: no modes


def test_raw_and_hex_give_the_same_32_bytes():
    assert KEY_LEN == 32
    assert parse_key(KEY) == KEY
    hex_text = "".join("%02x" % b for b in KEY)
    assert parse_key(hex_text.encode()) == KEY
    assert parse_key((hex_text.upper() + "\n").encode()) == KEY
    assert key_from_hex(hex_text) == KEY


def test_a_64_hex_character_file_is_never_a_64_byte_key():
    write("".join("%02x" % b for b in KEY).encode() + b"\n")
    try:
        k = read_key_file(PATH)
    finally:
        os.remove(PATH)
    assert k == KEY and len(k) == 32


def test_wrong_sizes_are_refused_with_the_place():
    for data in (b"", b"x" * 16, KEY + b"\x00", b"ab" * 48, b"0123456789abcdef" * 2):
        e = raises(parse_key, data, "l001.key")
        assert str(e).startswith("key_file: l001.key: ")
        assert "32" in str(e)


def test_bad_hex_names_the_field():
    e = raises(key_from_hex, "zz" * 32, "entry 0 key_hex")
    assert "entry 0 key_hex" in str(e) and "hex" in str(e)
    e = raises(key_from_hex, "ab" * 16, "key_hex")
    assert "64 hex characters" in str(e)
    raises(key_from_hex, None)


def test_missing_file_is_typed():
    e = raises(read_key_file, "no-such-key-file.bin")
    assert "no-such-key-file.bin" in str(e)
