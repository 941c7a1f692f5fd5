"""release-key: the city's Ed25519 release key, which signs update bundles (docs/updates.md).

The private key is written owner-only and never printed; only its id (the first 8 bytes
of SHA-256 over the public key) is shown, which is what `park-gateway update status`
and a refusal name. PATH.pub goes to every gateway's `[update] release_keys`.
"""
from __future__ import annotations

import os

from protocol import bundle

from .errors import DeviceToolError


class KeyFileError(DeviceToolError):
    """A release key file that cannot be written or read (exists, wrong mode, not a key)."""
    code, exit_status = "key_file", 32


def new_key(ui, path: str) -> tuple[str, dict]:
    pub_path = path + ".pub"
    for p in (path, pub_path):
        if os.path.lexists(p):
            raise KeyFileError(f"{p} exists; a release key is never overwritten", where=p,
                               hint="choose another PATH, or remove the old key deliberately")
    key = bundle.new_release_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(bundle.private_pem(key))
        with open(pub_path, "xb") as f:
            f.write(bundle.public_pem(key.public_key()))
    except OSError as e:
        raise KeyFileError(f"cannot write the key: {e.strerror}", where=e.filename or path) from None
    kid = bundle.key_id(bundle.public_raw(key.public_key())).hex()
    ui.note(f"keep {path} offline (it signs every release); copy {pub_path} to the gateways' [update] release_keys")
    return f"release key {kid}: private {path} (0600), public {pub_path}", {"key_id": kid, "private": path,
                                                                           "public": pub_path}


def load_private(path: str):
    """The release key, refused unless the file is owner-only (a signing key others can read is spent)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise KeyFileError(f"cannot read the release key: {e.strerror}", where=path) from None
    if mode & 0o077:
        raise KeyFileError(f"the release key is readable by others (mode {mode & 0o777:o})", where=path,
                           hint=f"chmod 600 {path}, and consider the key exposed")
    try:
        return bundle.load_private_key(path)
    except bundle.BundleError as e:
        raise KeyFileError(e.why, where=path) from None
