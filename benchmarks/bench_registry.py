#!/usr/bin/env python3
"""A park of 10,000 devices: registry import and daemon start-up.

    python -m benchmarks.bench_registry [--devices 10000] [--json]

  import   `Registry.import_file` of a provisioning file with N devices (goal < 2 s),
           next to the same rows inserted by a bare sqlite3 executemany in one
           transaction (WAL, synchronous=FULL) in the same run: the ratio is what
           the registry's checks cost on this machine.
  start    `park-gateway run` as its own process, from exec to the API answering
           `status` (goal < 1.5 s), next to a bare `python -c "import gateway.daemon"`
           in the same run: the ratio is the start-up's own work.

Every figure is a ratio to its baseline in the same invocation: the machine may be shared.
Both start-ups run with compiled bytecode, as an installed gateway has (pip writes .pyc at
install): a cache under the run's temporary directory, warmed once, whatever
PYTHONDONTWRITEBYTECODE says in the caller's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_gateway import config
from gateway.api import request
from gateway.registry import Registry, write_private

ROLES = ("container_sensor", "locker", "light_pole")


def provisioning(n: int) -> list[dict]:
    return [{"id": "d%05d" % i, "role": ROLES[i % 3], "site": "stadtpark", "key_hex": secrets.token_hex(32)}
            for i in range(n)]


def bare_import(path: str, items: list[dict]) -> float:
    t0 = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, role TEXT, site TEXT, key BLOB UNIQUE, added REAL)")
    with db:
        db.execute("BEGIN")
        db.executemany("INSERT INTO devices VALUES (?,?,?,?,?)",
                       [(d["id"], d["role"], d["site"], bytes.fromhex(d["key_hex"]), time.time()) for d in items])
    db.close()
    return time.perf_counter() - t0


def registry_import(work: Path, items: list[dict]) -> float:
    src = str(work / "devices.json")
    write_private(src, json.dumps(items))
    (work / "state").mkdir(mode=0o700, exist_ok=True)
    t0 = time.perf_counter()
    with Registry(str(work / "state" / "registry.sqlite")) as reg:
        n = len(reg.import_file(src))
    dt = time.perf_counter() - t0
    assert n == len(items)
    return dt


def installed_env(cache: Path) -> dict:
    """The environment of an installed gateway: bytecode compiled once and reused."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


async def start_to_ready(cfg: Path, sock: str, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg),
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            if proc.returncode is not None:
                raise RuntimeError("gateway exited with %s" % proc.returncode)
            if os.path.exists(sock):
                try:
                    await request(sock, {"op": "status"})
                    return time.perf_counter() - t0
                except OSError:
                    pass
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("gateway not ready after 60 s")
            await asyncio.sleep(0.005)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def bare_start(env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gateway.daemon, gateway.uplink, gateway.cli"], check=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    items = provisioning(a.devices)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = {"devices": a.devices, "bare_import_s": bare_import(str(work / "bare.sqlite"), items),
               "import_s": registry_import(work, items)}
        cfg = config(work, "tcp://127.0.0.1:1", 1, [])
        env = installed_env(work / "pycache")
        bare_start(env)  # compiles the bytecode once, as pip does at install
        res["bare_start_s"] = bare_start(env)
        res["start_s"] = asyncio.run(start_to_ready(cfg, str(work / "api.sock"), env))
    res["import_ratio"] = res["import_s"] / res["bare_import_s"]
    res["start_ratio"] = res["start_s"] / res["bare_start_s"]
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print("%d devices: import %.2f s (bare sqlite3 one transaction %.2f s, x%.1f; goal < 2 s); "
          "start to API ready %.2f s (bare import of the daemon's modules %.2f s, x%.1f; goal < 1.5 s)"
          % (a.devices, res["import_s"], res["bare_import_s"], res["import_ratio"], res["start_s"],
             res["bare_start_s"], res["start_ratio"]))


if __name__ == "__main__":
    main()
