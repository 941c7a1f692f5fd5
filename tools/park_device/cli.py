"""park-device: flash, load, provision and check a park board from a technician's laptop.

    park-device ports
    park-device flash --image ESP32_GENERIC.bin
    park-device deploy --role light_pole
    park-device provision --id l001 --site stadtpark --role light_pole --registry /var/lib/park-gateway/registry.sqlite
    park-device selftest
    park-device monitor
    park-device recover
    park-device manifest --role light_pole > board_manifest.py
    park-device release-key new city-release.pem
    park-device bundle --role light_pole --version 1.3.0 --key city-release.pem -o light_pole-1.3.0.bundle
    park-device bundle --role light_pole --runtime micropython.bin --mp-version 1.27.0 --key city-release.pem -o mp.bundle

Every command: --json for one machine-readable object on stdout, a one-line summary
otherwise, a typed error with a stable code and exit status when something is wrong.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import DeviceToolError
from .roles import ROLES
from .ui import UI


def _common(p: argparse.ArgumentParser, board: bool = True, timeout: float | None = 10.0,
            timeout_help: str = "seconds to wait for the board (default 10)") -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object (monitor: JSON lines) on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary line")
    if board:
        p.add_argument("-p", "--port", default=os.environ.get("PARK_DEVICE_PORT"),
                       help="serial port or pyserial URL (socket://host:port); default: the only ESP32 "
                            "plugged in ($PARK_DEVICE_PORT)")
        p.add_argument("--serial", dest="serial_number", help="pick the port by USB serial number")
        p.add_argument("--timeout", type=float, default=timeout, help=timeout_help)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="park-device", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version", version=f"park-device {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ports", help="list serial ports; mark the ones that look like an ESP32")
    _common(p, board=False)
    p.add_argument("--esp32", action="store_true", help="only ESP32-looking ports")

    p = sub.add_parser("flash", help="write a MicroPython image with esptool (checks the chip first)")
    _common(p, timeout_help="seconds to wait for the ROM bootloader to answer (default 10)")
    p.add_argument("--image", required=True, help="MicroPython firmware .bin for the board")
    p.add_argument("--chip", help="expected chip (esp32, esp32s3, ...); default: from the image")
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--erase", action="store_true", help="erase the whole flash first (loses files and keys)")
    p.add_argument("--before", default="default-reset", choices=["default-reset", "usb-reset", "no-reset"],
                   help="how to enter the ROM bootloader")

    p = sub.add_parser("deploy", help="compile and copy a role's firmware; skips unchanged files")
    _common(p)
    p.add_argument("--role", required=True, help="|".join(ROLES))
    p.add_argument("--force", action="store_true", help="deploy even if the board is provisioned for another role")
    p.add_argument("--no-restart", dest="restart", action="store_false", help="leave the firmware stopped")
    p.add_argument("--lines", action="store_true",
                   help="keep line numbers in tracebacks (a bench board: costs about 2 KiB of heap)")

    p = sub.add_parser("provision", help="write id, site, config and a fresh key; register with the gateway")
    _common(p)
    p.add_argument("--id", required=True, dest="device_id", help="device id, e.g. c001, l001, k001")
    p.add_argument("--role", required=True, help="|".join(ROLES))
    p.add_argument("--site", required=True, help="site name, e.g. stadtpark")
    p.add_argument("--config", dest="config_file", help="JSON or TOML file with link/rt/pins/app sections")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.NAME=VALUE",
                   help="override one setting, e.g. --set app.depth_mm=1100 --set pins.pir=4 (repeatable)")
    p.add_argument("--position", help="the device's node in the park's path graph")
    p.add_argument("--link", help="how the board reaches the gateway: serial | ble | wifi (default: the config's, "
                                  "serial); a radio falls back to the UART if one is wired (link.uart)")
    p.add_argument("--wifi-ssid", help="wifi: the park network's name")
    p.add_argument("--wifi-psk-file", help="wifi: a 0600 file holding the passphrase (else $PARK_WIFI_PSK, "
                                           "--wifi-psk-env, or a prompt; never on the command line)")
    p.add_argument("--wifi-psk-env", metavar="VAR", help="wifi: the environment variable holding the passphrase")
    p.add_argument("--gateway", metavar="ADDRESS[:PORT]",
                   help="wifi: the gateway's TCP server link (an IPv4 address; port 7000 by default)")
    reg = p.add_mutually_exclusive_group()
    reg.add_argument("--registry", help="gateway registry file (SQLite) to register in directly")
    reg.add_argument("--import-file", help="write a 0600 JSON file for `park-gateway device import` "
                                           "(default: ./<id>.device.json)")
    p.add_argument("--booking-key", help="lockers: the booking token key file (created if missing)")
    p.add_argument("--replace", action="store_true", help="re-key a device id or re-purpose a provisioned board")
    p.add_argument("--reset-config", action="store_true",
                   help="overwrite app settings the board has now (changed since, e.g. by `park-gateway config set`)")
    p.add_argument("--create-registry", action="store_true",
                   help="with --registry: create the registry if it does not exist yet (never done silently)")
    p.add_argument("--no-restart", dest="restart", action="store_false")

    p = sub.add_parser("manifest", help="print a role's board manifest for a frozen ESP-IDF build (--json: the files)")
    _common(p, board=False)
    p.add_argument("--role", required=True, help="|".join(ROLES))

    # software updates (docs/updates.md)
    p = sub.add_parser("release-key", help="release-key new PATH: the city's Ed25519 key that signs update bundles")
    _common(p, board=False)
    p.add_argument("action", choices=["new"])
    p.add_argument("path", metavar="PATH", help="private key file (created 0600); the public key goes to PATH.pub")
    p = sub.add_parser("bundle", help="build and sign a role's update bundle for `park-gateway update import`")
    _common(p, board=False)
    p.add_argument("--role", required=True, help="|".join(ROLES))
    p.add_argument("--version", dest="fw_version", metavar="X.Y.Z",
                   help="the version the firmware reports (its App.FW); required for an app bundle")
    p.add_argument("--runtime", metavar="FIRMWARE.bin",
                   help="a MicroPython app image for boards with OTA partitions instead of the role's files")
    p.add_argument("--mp-version", metavar="X.Y.Z", help="with --runtime: the image's MicroPython release")
    p.add_argument("--key", required=True, help="the release private key (park-device release-key new)")
    p.add_argument("--floor", metavar="X.Y.Z", help="devices refuse any later offer below this (default 0.0.0)")
    p.add_argument("--min-runtime", metavar="X.Y.Z",
                   help="oldest MicroPython the files run on (default: the first that loads this .mpy version)")
    p.add_argument("--schema", type=int, default=1, help="config-schema version the firmware reads (default 1)")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE")

    p = sub.add_parser("selftest", help="run the firmware's self test and show every sensor and actuator")
    _common(p)
    p.add_argument("--no-restart", dest="restart", action="store_false")

    p = sub.add_parser("recover", help="stop a board that keeps rebooting: interrupt it, remove /main.py, reset")
    _common(p)
    p.add_argument("--no-restart", dest="restart", action="store_false", help="leave it at the REPL, no reset")

    p = sub.add_parser("monitor", help="the board's log, live (Ctrl-C ends)")
    _common(p, timeout=None, timeout_help="fail if the board prints nothing for this many seconds (default: "
                                          "no limit, a quiet firmware is normal)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--until", help="stop at the first line matching this regular expression")
    p.add_argument("--reset", action="store_true", help="soft-reboot first to see the boot log")
    return ap


def run(args: argparse.Namespace, ui: UI) -> tuple[str, dict]:
    c = args.command
    if c == "ports":
        from .ports import scan
        rows = scan(include_all=not args.esp32)
        for r in rows:
            ids = f"{r['vid']}:{r['pid']}" if r["vid"] else "-"
            ui.line(f"{r['device']:<16} {ids:<10} {r['serial_number'] or '-':<18} {r['location'] or '-':<10} "
                    f"{'ESP32? ' + r['bridge'] if r['esp32'] else r['description'] or ''}")
        n = sum(r["esp32"] for r in rows)
        return f"ports: {len(rows)} serial port(s), {n} look like an ESP32", {"ports": rows}
    if c == "flash":
        from .flash import flash
        return flash(ui, args.port, args.image, chip=args.chip, baud=args.baud, erase=args.erase,
                     connect_mode=args.before, serial_number=args.serial_number, timeout=args.timeout)
    if c == "deploy":
        from .deploy import deploy
        return deploy(ui, args.port, args.role, timeout=args.timeout, force=args.force, restart=args.restart,
                      serial_number=args.serial_number, lines=args.lines)
    if c == "provision":
        from .provision import provision
        return provision(ui, args.port, args.device_id, args.role, args.site, registry=args.registry,
                         import_file=args.import_file, config_file=args.config_file, sets=args.sets,
                         position=args.position, replace=args.replace, reset_config=args.reset_config,
                         create_registry=args.create_registry, booking_key=args.booking_key,
                         timeout=args.timeout, restart=args.restart, serial_number=args.serial_number,
                         link=args.link, wifi_ssid=args.wifi_ssid, wifi_psk_file=args.wifi_psk_file,
                         wifi_psk_env=args.wifi_psk_env, gateway=args.gateway)
    if c == "manifest":
        from .manifest import describe
        return describe(ui, args.role)
    if c == "release-key":
        from .release import new_key
        return new_key(ui, args.path)
    if c == "bundle":
        from .bundle import BundleFailed, make_bundle, make_runtime_bundle
        if args.runtime:
            if not args.mp_version or args.fw_version or args.min_runtime:
                raise BundleFailed("--runtime takes --mp-version X.Y.Z, and no --version or --min-runtime",
                                   hint="the bundle's version is the image's MicroPython release")
            return make_runtime_bundle(ui, args.role, args.runtime, args.mp_version, args.key, args.output,
                                       floor=args.floor, force=args.force)
        if not args.fw_version or args.mp_version:
            raise BundleFailed("an app bundle takes --version X.Y.Z (--mp-version goes with --runtime)")
        return make_bundle(ui, args.role, args.fw_version, args.key, args.output, floor=args.floor,
                           min_runtime=args.min_runtime, schema=args.schema, force=args.force)
    if c == "selftest":
        from .selftest import selftest
        return selftest(ui, args.port, timeout=args.timeout, restart=args.restart, serial_number=args.serial_number)
    if c == "recover":
        from .recover import recover
        return recover(ui, args.port, timeout=args.timeout, restart=args.restart, serial_number=args.serial_number)
    if c == "monitor":
        from .monitor import monitor
        return monitor(ui, args.port, duration=args.duration, until=args.until, reset=args.reset,
                       serial_number=args.serial_number, idle_timeout=args.timeout)
    raise AssertionError(c)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    ui = UI(json_mode=args.json, quiet=args.quiet)
    try:
        summary, result = run(args, ui)
    except DeviceToolError as e:
        ui.fail(args.command, e)
        return e.exit_status
    except KeyboardInterrupt:
        ui.fail(args.command, DeviceToolError("interrupted"))
        return 130
    ui.finish(args.command, summary, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
