"""Config schemas and the device config file (/config.json).

A schema maps a setting name to (kind, default, lo, hi), ESPHome-style: every
setting has a kind, a clear default and bounds, and a bad value is refused with
a ConfigError naming the field. Validation builds a new dict, so a refused
change leaves the old config untouched.

    INT     int in lo..hi (bool is not an int here)
    BOOL    true/false (lo, hi unused: None)
    STR     text of lo..hi UTF-8 bytes
    CHOICE  one of the strings in the tuple lo (hi unused: None)
"""

from protocol import rules
from protocol.codes import MAX_CONFIG_KEY as MAX_KEY

from common import Device
from common.errors import ConfigError, ProvisionError
from common.store import read_json, write_json  # noqa: F401  (config.write_json: the file's writer)

INT = "int"
BOOL = "bool"
STR = "str"
CHOICE = "choice"

PATH = "/config.json"

LINK_SCHEMA = {
    "type": (CHOICE, "uart", ("uart",), None),  # the wired link's kind (older configs); see "kind"
    "kind": (CHOICE, "serial", ("serial", "ble", "wifi"), None),  # transport to the gateway
    "uart": (INT, 1, -1, 2),           # -1: no UART wired (a radio can then not fall back to serial)
    "baud": (INT, 115200, 1200, 921600),
    "tx": (INT, -1, -1, 48),           # -1: the UART's default pins
    "rx": (INT, -1, -1, 48),
    "hb": (INT, 3600, 10, 86400),      # heartbeat period (s) until a welcome sets it
    "hello_max": (INT, 300, 1, 3600),  # cap of the hello retry backoff (s)
    "retry_max": (INT, 60, 1, 3600),   # cap of the event retransmit backoff (s)
    "poll_ms": (INT, 20, 5, 1000),     # link poll period while awake
    "mtu": (INT, 247, 23, 517),        # BLE: preferred ATT MTU
    "adv_ms": (INT, 200, 20, 10240),   # BLE: advertising interval
    "ssid": (STR, "", 0, 32),          # Wi-Fi network; empty: not configured
    "psk": (STR, "", 0, 63),           # Wi-Fi passphrase (WPA2: 8..63 bytes); never logged or reported
    "host": (STR, "", 0, 64),          # Wi-Fi: the gateway's TCP server (an IP address: no DNS wait)
    "port": (INT, 7000, 1, 65535),    # the port of gateway.toml.example
    "backoff_max": (INT, 60, 1, 3600),  # Wi-Fi: cap of the reconnect backoff (s)
}

RT_SCHEMA = {
    "wdt_ms": (INT, 8000, 0, 60000),        # hardware watchdog timeout; 0 = none (bench only)
    "safe_boots": (INT, 5, 2, 50),          # consecutive fast reboots that enter safe mode
    "stable_s": (INT, 60, 5, 3600),         # healthy run time after which a boot was not "fast"
    "safe_retry_s": (INT, 3600, 0, 86400),  # healthy time in safe mode before trying normal again; 0 = never
    "batt_div": (INT, 0, 0, 20000),         # battery divider x1000 on ADC "batt"; 0 = mains powered
    "log_kb": (INT, 4, 0, 64),              # size of /state/log.txt before it rotates
    "awake_s": (INT, 15, 1, 600),           # longest wake of a sleeping device waiting for acks
    "linger_ms": (INT, 500, 0, 10000),      # stay awake after a welcome for queued commands
    "gc_kb": (INT, 8, 0, 64),               # garbage allowed before the loop collects between steps
}


def _bad(field, reason):
    return ConfigError(field, reason)


def check(schema, name, value, where=""):
    """Return value if it fits schema[name], else raise ConfigError(where + name)."""
    f = where + name
    spec = schema.get(name)
    if spec is None:
        raise _bad(f, "unknown setting")
    kind, _, lo, hi = spec
    t = type(value)
    if kind == INT:
        if t is not int:
            raise _bad(f, "must be an integer")
        if value < lo or value > hi:
            raise _bad(f, "%d out of range %d..%d" % (value, lo, hi))
    elif kind == BOOL:
        if t is not bool:
            raise _bad(f, "must be true or false")
    elif kind == STR:
        if t is not str:
            raise _bad(f, "must be text")
        n = len(value.encode())
        if n < lo or n > hi:
            raise _bad(f, "must be %d..%d bytes long" % (lo, hi))
    elif kind == CHOICE:
        if t is not str or value not in lo:
            raise _bad(f, "must be one of " + ", ".join(lo))
    else:
        raise _bad(f, "schema has unknown kind %r" % (kind,))
    return value


def defaults(schema):
    d = {}
    for k in schema:
        d[k] = schema[k][1]
    return d


def validate(schema, values, base=None, where=""):
    """A new config: `base` (or the defaults) overlaid with `values`, every value checked.

    Keys are checked in sorted order so the field named in an error does not
    depend on dict order (MicroPython dicts have none).
    """
    if type(values) is not dict:
        raise _bad(where.rstrip(".") or "config", "must be a map")
    out = dict(base) if base is not None else defaults(schema)
    for k in sorted(values):
        if type(k) is not str:
            raise _bad(where + repr(k), "setting names must be text")
        out[k] = check(schema, k, values[k], where)
    return out


def check_schema(schema, where="app"):
    """Catch a broken SCHEMA at boot rather than at the first config command."""
    for k in schema:
        if type(k) is not str or not 0 < len(k) <= MAX_KEY:
            raise _bad(where + "." + str(k), "setting names must be 1..%d bytes" % MAX_KEY)
        spec = schema[k]
        if type(spec) is not tuple or len(spec) != 4:
            raise _bad(where + "." + k, "schema entry must be (kind, default, lo, hi)")
        check(schema, k, spec[1], where + ".")


def _pins(raw):
    if type(raw) is not dict:
        raise _bad("pins", "must be a map of logical name -> GPIO or {pin: ...}")
    used = {}  # type: dict
    for name in sorted(raw):
        v = raw[name]
        nums = []
        if type(v) is int:
            nums.append(("", v))
        elif type(v) is dict:
            for k in sorted(v):
                x = v[k]
                if k in ("pin", "tx", "rx"):
                    if type(x) is not int:
                        raise _bad("pins." + name + "." + k, "must be a GPIO number")
                    nums.append(("." + k, x))
                elif type(x) not in (int, bool, str):
                    raise _bad("pins." + name + "." + k, "must be int, bool or text")
        else:
            raise _bad("pins." + name, "must be a GPIO number or a map")
        for suffix, n in nums:
            if n < 0 or n > 48:
                raise _bad("pins." + name + suffix, "GPIO %d out of range 0..48" % n)
            other = used.get(n)
            if other is not None:
                raise _bad("pins." + name + suffix, "GPIO %d already used by %s" % (n, other))
            used[n] = name + suffix
    return raw


def DeviceConfig(raw):
    """The provisioned /config.json, checked section by section, as a common.Device (which
    outlives this module: common.start drops it after boot).

    id/site/role identify the device; link and rt are runtime settings (LINK_SCHEMA,
    RT_SCHEMA, defaults filled in); pins maps logical names to GPIOs; app is the
    raw role section, validated against App.SCHEMA by the runtime.
    """
    if type(raw) is not dict:
        raise ProvisionError("config: top level must be a map")
    kid = raw.get("id")
    if type(kid) is not str or not rules.valid_id(kid):
        raise ProvisionError("config: id %r must be %s" % (kid, rules.ID_RULE))
    site = raw.get("site", "")
    if site != "" and not rules.valid_site(site):
        raise ProvisionError("config: site %r must be %s" % (site, rules.SITE_RULE))
    role = raw.get("role")
    if type(role) is not str or not role:
        raise ProvisionError("config: role is missing")
    link = validate(LINK_SCHEMA, raw.get("link", {}), where="link.")
    rt = validate(RT_SCHEMA, raw.get("rt", {}), where="rt.")
    pins = _pins(raw.get("pins", {}))
    app = raw.get("app", {})
    if type(app) is not dict:
        raise _bad("app", "must be a map")
    return Device(raw, kid, site, role, link, rt, pins, app)


def load(path=PATH):
    try:
        raw = read_json(path)
    except OSError:
        raise ProvisionError("%s is missing: provision the board (park-device provision)" % path)
    except ValueError as e:
        raise ProvisionError("%s is not valid JSON: %s" % (path, e))
    return DeviceConfig(raw)


def save_app(path, dev, values):
    """Persist a new app section; the rest of the file is kept as provisioned."""
    raw = dict(dev.raw)
    raw["app"] = values
    write_json(path, raw)
    dev.raw = raw
    dev.app = values
