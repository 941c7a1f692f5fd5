"""python -m sim: the simulator's entry point (./dev demo runs `python -m sim demo`)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sim", description="the park simulator (never installed)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    dm = sub.add_parser("demo", help="simulated Stadtpark with live status")
    dm.add_argument("--duration", type=float, default=0, help="stop after SECONDS (default: until Ctrl-C)")
    dm.add_argument("--broker", help="mqtt://HOST:PORT of an existing broker instead of a local Mosquitto")
    dm.add_argument("--state-dir", help="keep demo state here (default: a temporary directory)")
    dm.add_argument("--night", action="store_true",
                    help="place the park where it is night now, so the light wave shows at any hour")
    dm.add_argument("--json", action="store_true", help="one JSON object per status update")
    dm.add_argument("--links", choices=("radio", "serial"), default="radio",
                    help="radio (default): bins over BLE, poles and lockers over Wi-Fi; serial: every board on its "
                         "link UART")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sim.demo import main as demo_main

    return demo_main(duration=args.duration, broker=args.broker, state_dir=args.state_dir,
                     as_json=args.json, night=args.night, links=args.links)


if __name__ == "__main__":
    sys.exit(main())
