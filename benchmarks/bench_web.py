"""The dashboard's cost (issue 12): gateway CPU per frame at 2,000 frames/s and pre-light
p99, each with the dashboard off and on (a viewer following its live events), alternated in
one invocation so the load of the machine falls on both alike.

    python -m benchmarks.bench_web [--seconds 20] [--rounds 2] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from benchmarks.bench_gateway import latency, soak
from sim.broker import Mosquitto, free_port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    runs: dict[str, list] = {"off": [], "on": []}
    with Mosquitto() as broker:
        for _ in range(a.rounds):
            for mode in ("off", "on"):
                web = "127.0.0.1:%d" % free_port() if mode == "on" else ""
                s = asyncio.run(soak(broker.port, a.seconds, a.rate, web=web))
                lat = asyncio.run(latency(broker.port, a.seconds, 1000, web=web))
                runs[mode].append({"cpu_us_per_frame": s["cpu_us_per_frame"], "sse_bytes": s["sse_bytes"],
                                   "p99_ms": lat["p99_ms"], "p50_ms": lat["p50_ms"]})
    cpu = {m: statistics.median(r["cpu_us_per_frame"] for r in runs[m]) for m in runs}
    p99 = {m: statistics.median(r["p99_ms"] for r in runs[m]) for m in runs}
    res = {"runs": runs, "cpu_us_per_frame": cpu, "extra_cpu_percent": 100 * (cpu["on"] / cpu["off"] - 1),
           "prelight_p99_ms": p99}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print("gateway CPU per frame at %d frames/s: dashboard off %.1f us, on (one viewer on /events) %.1f us -> "
          "%+.1f %% (goal < 5 %%)" % (a.rate, cpu["off"], cpu["on"], res["extra_cpu_percent"]))
    print("pre-light p99 at 1,000 frames/s background: off %.2f ms, on %.2f ms (goal: unchanged)"
          % (p99["off"], p99["on"]))
    for m in ("off", "on"):
        for r in runs[m]:
            print("  %s: %s" % (m, r))


if __name__ == "__main__":
    main()
