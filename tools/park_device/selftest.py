"""selftest: run the role App's own self test on the board and show each sensor and actuator.

The firmware is stopped (raw REPL), then the App is built on a bench runtime: the real
hal over the provisioned pin map, the real /state store, and a link that records instead
of sending, so a self test neither counts as a boot nor talks to the gateway.
If the runtime offers ``common.runtime.selftest()`` that is used instead.
"""
from __future__ import annotations

from .board import Board
from .errors import BoardError, NotDeployed, SelftestFailed
from .provision import read_identity

_SCRIPT = r"""
def _pd_selftest():
    from common import runtime as R
    f = getattr(R, 'selftest', None)
    if f is not None:
        rows = f()
    else:
        from common import clock, config, hal
        from common.store import Store
        dev = config.load()
        App = R.load_app(dev.role)
        class BenchRt:
            def __init__(s):
                s.id = dev.id; s.dev = dev; s.hal = hal.Hal(dev.pins); s.store = Store(); s.safe = False
                s.cfg = config.validate(App.SCHEMA, dev.app, where='app.')
                s.gateway_seen_ms = None; s.link_up = False; s.sent = []; s.logs = []
            def ticks_ms(s): return clock.ticks_ms()
            def now(s): return clock.now()
            def send(s, m): s.sent.append(m); return 0
            def event(s, m, durable=False): s.sent.append(m)
            def log(s, t, keep=False): s.logs.append(t)
            def battery_mv(s): return None
            def sleep_request(s, ms): pass
            def pending_events(s): return 0
        rt = BenchRt()
        app = App(rt)
        app.start(False)
        rows = app.selftest()
    print(json.dumps({'role': dev.role if f is None else None, 'rows': [[n, bool(ok), str(d)] for n, ok, d in rows]}))
"""


def selftest(ui, port: str | None, *, timeout: float = 10.0, restart: bool = True,
             serial_number: str | None = None) -> tuple[str, dict]:
    with Board.open(port, timeout=timeout, serial_number=serial_number) as b:
        cfg = read_identity(b)
        role = cfg.get("role")
        if b.hashes([f"/lib/{role}/app.mpy"])[f"/lib/{role}/app.mpy"] is None:
            raise NotDeployed(f"the {role} firmware is not on the board", where=b.port,
                              hint=f"run `park-device deploy --role {role}`")
        b.call_json("print(1)")
        b.exec(_SCRIPT)
        try:
            res = b.call_json("_pd_selftest()", timeout=max(timeout, 20))
        except BoardError as e:
            raise SelftestFailed(f"the self test itself failed on the board: {e.message}", where=b.port,
                                 hint=e.hint) from None
        if restart:
            b.restart()
    rows = [{"name": n, "ok": ok, "detail": d} for n, ok, d in res["rows"]]
    width = max([len(r["name"]) for r in rows] + [4])
    for r in rows:
        ui.line(f"  {'PASS' if r['ok'] else 'FAIL'}  {r['name']:<{width}}  {r['detail']}")
    failed = [r["name"] for r in rows if not r["ok"]]
    result = {"id": cfg.get("id"), "role": role, "port": b.port, "results": rows, "failed": failed}
    if not rows:
        raise SelftestFailed("the firmware reported no self-test results", where=b.port)
    if failed:
        err = SelftestFailed(f"{cfg.get('id')}: {len(failed)} of {len(rows)} checks failed: {', '.join(failed)}",
                             where=b.port, hint="see the rows above; check wiring and the config's pins")
        err.result = result
        raise err
    return f"selftest: {cfg.get('id')} ({role}) on {b.port}: all {len(rows)} checks passed", result
