"""`[update]` in gateway.toml: the city's release keys and how a rollout paces itself (docs/updates.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gateway.configread import setting


@dataclass
class UpdateConfig:
    release_keys: list = setting(kind=list, default_factory=list)  # public key files (PATH.pub of park-device release-key)
    canary: int = setting(1, lo=0, hi=100)  # devices per rollout updated first; the rest wait until they are valid
    per_link: int = setting(2, lo=1, hi=64)  # devices receiving at once on one link (a BLE pool holds 5-7 connections)
    link_rate: int = setting(4096, lo=64, hi=1_000_000)  # image bytes/s per link: control traffic keeps its latency
    stall_s: float = setting(120.0, lo=1.0, hi=7 * 86400)  # reachable without progress this long: the device failed
    trial_s: float = setting(300.0, lo=1.0, hi=7 * 86400)  # from commit to `valid`, counted while reachable
    store: str = setting("")  # default STATE_DIR/updates.sqlite
    keys: list = field(default_factory=list, repr=False)  # the loaded public keys


def read_update(r, d, path: tuple, state_dir: str) -> UpdateConfig:
    """Validate `[update]`; each release key file must load (a refusal names the file)."""
    from protocol import bundle

    u = UpdateConfig(**r.section(d, path, UpdateConfig))
    for i, p in enumerate(u.release_keys):
        if not isinstance(p, str) or not p:
            raise r.error(path + ("release_keys",), "entry %d must be a file name, got %r" % (i, p))
        try:
            u.keys.append(bundle.load_public_key(p))
        except bundle.BundleError as e:
            raise r.error(path + ("release_keys",), e.why) from None
    if not u.store:
        u.store = os.path.join(state_dir, "updates.sqlite")
    return u


def defaults(state_dir: str) -> UpdateConfig:
    """[update] as an empty table reads (a Config built in code, not from a file)."""
    return UpdateConfig(store=os.path.join(state_dir, "updates.sqlite"))
