"""provision: give a board its identity, config and a fresh per-device key, and register it.

Order matters for "the board left as it was": everything that can refuse (ids, config
schema, registry conflicts) is checked before the board is touched; files go in through
a rename; if registering fails afterwards, the board's previous files are put back.
Keys live in memory only long enough to be written; they are never printed or logged.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from protocol import keyfile, rules

from .board import Board
from .errors import BadConfig, BoardError, ConfigConflict, KeyConflict, NotProvisioned, WrongRole
from .fwload import FirmwareModules
from .linkcfg import describe as describe_link
from .linkcfg import link_section, refuse_psk_in_sets
from .registrar import GatewayRegistry, entry, write_private
from .roles import ROLES, check_role, firmware_root, needs_booking_key, template

KEY_LEN = keyfile.KEY_LEN
SECTIONS = ("link", "rt", "pins", "app")


def parse_set(items: list[str]) -> dict:
    """--set app.depth_mm=1200 --set pins.pir=4 -> {"app": {"depth_mm": 1200}, "pins": {"pir": 4}}."""
    out: dict = {}
    for item in items or ():
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise BadConfig(f"--set {item!r} must look like section.name=value", where="--set",
                            hint="sections: " + ", ".join(SECTIONS))
        path, raw = item.split("=", 1)
        section, name = path.split(".", 1)
        if section not in SECTIONS:
            raise BadConfig(f"--set {item!r}: unknown section {section!r}", where="--set",
                            hint="sections: " + ", ".join(SECTIONS))
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # bare text
        out.setdefault(section, {})[name] = value
    return out


def compose(device_id: str, role: str, site: str, base: dict | None, sets: dict,
            use_template: bool = True) -> dict:
    """The /config.json document: identity + reference wiring, the sections from --config, then --set."""
    if not rules.valid_id(device_id):
        raise BadConfig(f"device id {device_id!r} must be {rules.ID_RULE}", where="--id",
                        hint="park convention: c001 containers, l001 light poles, k001 lockers")
    check_role(role)
    if not rules.valid_site(site):
        raise BadConfig(f"site {site!r} must be {rules.SITE_RULE}", where="--site")
    base = dict(base or {})
    tmpl = template(role) if use_template else {}
    for k in base:
        if k not in SECTIONS and k not in ("id", "role", "site"):
            raise BadConfig(f"unknown top-level key {k!r}", where="config file",
                            hint="allowed: " + ", ".join(SECTIONS))
    for k in ("id", "role", "site"):
        if k in base and base[k] != {"id": device_id, "role": role, "site": site}[k]:
            raise BadConfig(f"config file says {k}={base[k]!r} but the command line says "
                            f"{ {'id': device_id, 'role': role, 'site': site}[k]!r}", where=f"config file: {k}")
    cfg = {"id": device_id, "site": site, "role": role}
    for s in SECTIONS:
        given = base.get(s) or {}
        if not isinstance(given, dict):
            raise BadConfig(f"section {s} must be a map", where=f"config file: {s}")
        # a pins map from the file replaces the reference wiring whole (no stray GPIOs left over)
        sec = dict(given) if (s == "pins" and given) else {**tmpl.get(s, {}), **given}
        sec.update(sets.get(s, {}))
        cfg[s] = sec
    return cfg


def load_config_file(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise BadConfig(f"cannot read {path}: {e.strerror}", where=path) from None
    try:
        if path.endswith(".toml"):
            import tomllib
            return tomllib.loads(text)
        return json.loads(text)
    except ValueError as e:
        raise BadConfig(f"{path} is not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {e}", where=path) from None


def validate_host(cfg: dict, fw_root: Path | None = None) -> None:
    """Run the firmware's own config checks (firmware/common/config.py) here, before touching the board."""
    fw = Path(fw_root or firmware_root())
    if not (fw / "common" / "config.py").is_file():
        return
    mods = FirmwareModules(fw)
    fwconfig, fwerrors = mods.load("common.config"), mods.load("common.errors")
    try:
        fwconfig.DeviceConfig(cfg)
    except fwerrors.ConfigError as e:
        raise BadConfig(f"{e.field}: {e.reason}", where=e.field) from None
    except fwerrors.ProvisionError as e:
        raise BadConfig(str(e), where="config") from None


_BOARD_CHECK = r"""
def _pd_check(path, role):
    from common import config as C
    from common.errors import ConfigError, ProvisionError
    try:
        dc = C.load(path)
        try:
            App = __import__(role + '.app', None, None, ['App']).App
        except ImportError:
            App = None
        if App is not None:
            C.validate(App.SCHEMA, dc.app, where='app.')
        print(json.dumps({'ok': 1, 'app_checked': App is not None}))
    except ConfigError as e:
        print(json.dumps({'ok': 0, 'field': e.field, 'reason': e.reason}))
    except ProvisionError as e:
        print(json.dumps({'ok': 0, 'field': 'config', 'reason': str(e)}))
"""


def _dump(cfg: dict) -> bytes:
    return (json.dumps(cfg, sort_keys=True, separators=(",", ":")) + "\n").encode()


def read_key_file(path: str) -> bytes:
    """A 32-byte key (raw or 64 hex characters) from an owner-only file, through protocol.keyfile."""
    try:
        return keyfile.read_key_file(path)
    except keyfile.KeyFileError as e:
        cls = KeyConflict if "readable by" in e.why else BadConfig
        raise cls(e.why, where=path, hint=e.hint or None) from None


def app_defaults(role: str, fw_root: Path | None = None) -> dict:
    """The role App's SCHEMA defaults, from the firmware tree ({} if the App cannot be loaded on a host)."""
    try:
        mods = FirmwareModules(fw_root)
        return mods.load("common.config").defaults(mods.load(f"{role}.app").App.SCHEMA)
    except Exception:  # an App that needs the board's hardware to import: no defaults, no harm
        return {}


def merge_app(composed: dict, explicit: dict, board: dict | None, defaults: dict,
              reset: bool) -> tuple[dict, list[str], list[str]]:
    """(app section to write, names kept from the board, names this run overwrites).

    The board's app section is live config: the gateway changes it with config commands. A
    re-provision keeps every value this run does not set explicitly (--config, --set); a value it
    does set that differs from the board's is an overwrite, refused unless reset.
    """
    if board is None or reset:
        gone = sorted(k for k in (board or {}) if composed.get(k, defaults.get(k)) != board[k])
        return composed, [], gone
    app = {**composed, **board, **explicit}
    kept = sorted(k for k in board if k not in explicit and board[k] != composed.get(k, defaults.get(k)))
    over = sorted(k for k in explicit if k in board and board[k] != explicit[k])
    return app, kept, over


class RegistryTarget:
    """Where a device gets registered: the gateway (through `park-gateway device import`) or an import file."""

    def __init__(self, registry: str | None, import_file: str | None, timeout: float = 30.0,
                 create: bool = False) -> None:
        if registry and import_file:
            raise BadConfig("give --registry or --import-file, not both", where="--registry")
        self.registry, self.import_file = registry, import_file
        self.gw = GatewayRegistry(registry, timeout=timeout, create=create) if registry else None
        self._dir: str | None = None

    def describe(self) -> str:
        return f"registry {self.registry}" if self.registry else f"import file {self.import_file}"

    def __enter__(self) -> "RegistryTarget":
        return self

    def __exit__(self, *exc) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _entry_file(self, device_id, role, site, key, position) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="park-device-")  # 0700
        path = os.path.join(self._dir, f"{device_id}.device.json")
        write_private(path, entry(device_id, role, site, key, position))
        return path

    def preflight(self, device_id: str) -> bool:
        """Is the id registered? Fails early (before the board is touched) on a bad registry."""
        return self.gw is not None and self.gw.lookup(device_id) is not None

    def check(self, device_id, role, site, key, position) -> dict:
        """{"registered", "same_key", "key_owner"} for this id with this key (nothing registered yet)."""
        if self.gw is None:
            return {"registered": False, "same_key": False, "key_owner": None}
        found = self.gw.check(self._entry_file(device_id, role, site, key, position))
        return found.get(device_id, {"registered": False, "same_key": False, "key_owner": None})

    def register(self, device_id, role, site, key, position, replace: bool) -> dict:
        if self.gw is not None:
            res = self.gw.import_file(self._entry_file(device_id, role, site, key, position), replace)
            return {"how": "registry", "where": self.registry, "daemon": res.get("daemon")}
        write_private(self.import_file, entry(device_id, role, site, key, position))
        return {"how": "import_file", "where": self.import_file}


def provision(ui, port: str | None, device_id: str, role: str, site: str, *, registry: str | None = None,
              import_file: str | None = None, config_file: str | None = None, sets: list[str] = (),
              position: str | None = None, replace: bool = False, reset_config: bool = False,
              booking_key: str | None = None, create_registry: bool = False, timeout: float = 10.0,
              restart: bool = True, fw_root=None, serial_number: str | None = None, link: str | None = None,
              wifi_ssid: str | None = None, wifi_psk_file: str | None = None, wifi_psk_env: str | None = None,
              gateway: str | None = None) -> tuple[str, dict]:
    base = load_config_file(config_file)
    given = parse_set(list(sets))
    refuse_psk_in_sets(given)
    cfg = compose(device_id, role, site, base, given)
    link_given = any(v is not None for v in (link, wifi_ssid, wifi_psk_file, wifi_psk_env, gateway)) \
        or "link" in given or "link" in (base or {})
    if link_given:
        cfg["link"].update(link_section(link, cfg["link"], wifi_ssid, wifi_psk_file, wifi_psk_env, gateway))
    explicit = {**((base or {}).get("app") or {}), **given.get("app", {})}
    validate_host(cfg, fw_root)
    token_key = None
    if needs_booking_key(role) and booking_key:
        if os.path.exists(booking_key):
            token_key = read_key_file(booking_key)

    with contextlib.ExitStack() as stack:
        target = stack.enter_context(RegistryTarget(
            registry, import_file or (None if registry else f"{device_id}.device.json"),
            timeout=max(timeout, 30.0), create=create_registry))
        registered = target.preflight(device_id)
        b = stack.enter_context(Board.open(port, timeout=timeout, serial_number=serial_number))
        info = b.info()
        check_deployed_role(b, role)
        old_cfg_doc = info.get("config") or {}
        old_id = old_cfg_doc.get("id")
        board_key = b.read_file("/key.bin") if info.get("has_key") else None
        if board_key is not None and len(board_key) != KEY_LEN:
            board_key = None  # a damaged key file is replaced like a missing one
        if board_key is not None and old_id not in (None, device_id) and not replace:
            raise KeyConflict(f"this board is already provisioned as {old_id} with its own key", where=b.port,
                              hint=f"to re-purpose it as {device_id}, run again with --replace "
                                   f"(and remove {old_id} from the gateway)")
        key, key_state = board_key, "kept"
        if key is None or old_id != device_id:
            key, key_state = secrets.token_bytes(KEY_LEN), "new"
        reg = target.check(device_id, role, site, key, position)
        if reg["registered"] and not reg["same_key"] and not replace:
            raise KeyConflict(f"device {device_id} is already registered with a different key "
                              "(another board may carry this id)", where=target.registry,
                              hint="choose another --id, or --replace to re-key it (the old board stops working)")
        if reg["key_owner"] not in (None, device_id):
            raise KeyConflict(f"this board's key already belongs to device {reg['key_owner']}", where=target.registry,
                              hint="run again with --replace to give the board a fresh key")

        same_device = old_id == device_id and old_cfg_doc.get("role") == role
        board_app = old_cfg_doc.get("app") if same_device and isinstance(old_cfg_doc.get("app"), dict) else None
        cfg["app"], kept, over = merge_app(cfg["app"], explicit, board_app, app_defaults(role, fw_root),
                                           reset_config)
        if same_device and not link_given and isinstance(old_cfg_doc.get("link"), dict):
            cfg["link"] = old_cfg_doc["link"]  # a run that says nothing of the link keeps the board's radio
        if over and not reset_config:
            what = ", ".join(f"app.{k}: {json.dumps(board_app[k])} -> {json.dumps(explicit[k])}" for k in over)
            raise ConfigConflict(f"the board's config changed since it was provisioned (e.g. by `park-gateway "
                                 f"config set`); this run would overwrite {what}", where="app." + over[0],
                                 hint="drop those --set/--config values to keep the board's, or add "
                                      "--reset-config to overwrite them")
        validate_host(cfg, fw_root)
        new_cfg = _dump(cfg)

        need_token = needs_booking_key(role) and (token_key is not None or not info.get("has_booking_key"))
        if needs_booking_key(role) and not info.get("has_booking_key") and not booking_key:
            raise BadConfig("a locker needs the booking token key: give --booking-key FILE "
                            "(created with a fresh key if it does not exist)", where="--booking-key")
        if needs_booking_key(role) and booking_key and token_key is None:
            token_key = secrets.token_bytes(KEY_LEN)
            write_private(booking_key, token_key)
            ui.note(f"created a new booking key in {booking_key} (0600); give it to the booking system")

        old_cfg_bytes = b.read_file("/config.json") if info.get("config") is not None else None
        old_token = b.read_file("/booking.key") if need_token and info.get("has_booking_key") else None
        changed = []
        try:
            if info.get("config") != cfg:
                b.write_file("/config.json.new", new_cfg)
                check = _board_check(b, role)
                if check is not None and not check["ok"]:
                    raise BadConfig(f"{check['field']}: {check['reason']}", where=check["field"],
                                    hint="the board's firmware refused this config; nothing was changed")
                b.exec("_pd_replace('/config.json.new', '/config.json')")
                changed.append("/config.json")
            if key_state == "new":
                b.write_file("/key.bin", key)
                changed.append("/key.bin")
            if need_token:
                b.write_file("/booking.key", token_key)
                changed.append("/booking.key")
            registered_in = target.register(device_id, role, site, key, position,
                                            replace=replace or reg["registered"] or registered)
        except BaseException:
            _rollback(b, changed, old_cfg_bytes, board_key, old_token)
            raise
        finally:
            b.remove("/config.json.new")
        if restart and changed:
            b.restart()

    result = {"id": device_id, "role": role, "site": site, "port": b.port, "key": key_state,
              "changed": changed, "registered": registered_in, "position": position,
              "link": describe_link(cfg["link"]),
              "config": {"kept": {k: board_app[k] for k in kept}, "overwritten": over}}
    if changed:
        what = ("new key" if key_state == "new" else "key kept") + \
               (", config written" if "/config.json" in changed else ", config unchanged")
    else:
        what = "already provisioned, nothing changed"
    if kept:
        what += " (kept the board's " + ", ".join(f"{k}={json.dumps(board_app[k])}" for k in kept) + ")"
    if over:
        what += " (--reset-config overwrote " + ", ".join(f"app.{k}" for k in over) + ")"
    lk = cfg["link"]
    if lk.get("kind", "serial") == "wifi":
        what += f"; link wifi ({lk['ssid']}, gateway {lk['host']}:{lk['port']})"
    elif lk.get("kind", "serial") == "ble":
        what += "; link ble"
    return (f"provision: {device_id} ({role}, {site}) on {b.port}: {what}; registered in {target.describe()}",
            result)


def check_deployed_role(b: Board, role: str) -> None:
    """Refuse to give a board an identity for a role whose firmware it does not run (it would boot-loop)."""
    paths = [f"/lib/{r}/app.{ext}" for r in ROLES for ext in ("mpy", "py")]
    have = b.hashes(paths)
    deployed = sorted({p.split("/")[2] for p, h in have.items() if h is not None})
    if deployed and role not in deployed:
        raise WrongRole(f"the board runs the {' and '.join(deployed)} firmware, not {role}", where=b.port,
                        hint=f"deploy it first: park-device deploy --role {role} --force")


def _board_check(b: Board, role: str) -> dict | None:
    """Let the deployed firmware validate the new config (None when no firmware is deployed yet)."""
    if b.hashes(["/lib/common/config.mpy"])["/lib/common/config.mpy"] is None:
        return None
    b.exec(_BOARD_CHECK)
    return b.call_json(f"_pd_check('/config.json.new', {role!r})")


def _rollback(b: Board, changed: list[str], old_cfg: bytes | None, old_key: bytes | None,
              old_token: bytes | None) -> None:
    try:
        if "/config.json" in changed:
            if old_cfg is None:
                b.remove("/config.json")
            else:
                b.write_file("/config.json", old_cfg)
        if "/key.bin" in changed:
            if old_key is None:
                b.remove("/key.bin")
            else:
                b.write_file("/key.bin", old_key)
        if "/booking.key" in changed:
            if old_token is None:
                b.remove("/booking.key")
            else:
                b.write_file("/booking.key", old_token)
    except Exception as e:  # report the original error; say the board may need a re-run
        raise BoardError(f"could not restore the board after a failure: {e}", where=b.port,
                         hint="run provision again") from e


def read_identity(b: Board) -> dict:
    info = b.info()
    cfg = info.get("config")
    if not cfg or not info.get("has_key"):
        raise NotProvisioned("the board has no identity (/config.json and /key.bin)", where=b.port,
                             hint="run `park-device provision`")
    return cfg
