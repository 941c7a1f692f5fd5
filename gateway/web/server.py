"""The dashboard server: aiohttp in the daemon's own event loop, pages, server-sent events, actions, /metrics.

aiohttp (not Starlette + uvicorn) because it is one well-kept package that
runs inside an existing asyncio loop without a second server process or
thread: the dashboard reads the daemon's objects directly and costs the frame
path one set insertion per event (the bus listener); pages are rendered only
when someone looks. Access rules (docs/operations.md "Dashboard"): it listens
on 127.0.0.1 unless `[web] listen` says otherwise, and then only with TLS;
anyone who reaches it may look, only a logged-in operator may act, and every
action goes to the same audit log lines as the CLI's commands.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import logging
import os
import ssl
import time
from pathlib import Path
from urllib.parse import quote

from gateway import __version__, readable
from gateway.web import auth, energy, view

log = logging.getLogger("park.web")
audit = logging.getLogger("park.api")  # the CLI's commands are audited there too

STATIC = Path(__file__).with_name("static")
COOKIE = "park_session"
TICK_S = 0.5  # at most two page updates a second, rendered once for all viewers
REFRESH_S = 5.0  # ages and fading levels change without events
MAX_CLIENTS = 50
ACTION_TIMEOUT_S = 15.0
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class Live:
    """What the bus tells the dashboard between page renders: motion times, recent alerts, bounded history."""

    def __init__(self, history: int):
        self.motion: dict[str, float] = {}
        self.alerts: collections.deque = collections.deque(maxlen=50)
        self.history: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=history))
        self.version = 0

    def on_event(self, ev: dict) -> None:
        k = ev.get("kind")
        dev = ev.get("device", "")
        now = time.time()
        if k == "telemetry":
            m = ev.get("msg") or {}
            t = m.get("type")
            if t == "light":
                self.history[dev].append((now, m["level"]))
            elif t == "fill" and m.get("fill") is not None:
                self.history[dev].append((now, m["fill"]))
            elif t == "locker":
                self.history[dev].append((now, bin(m["occupied"]).count("1")))
        elif k == "event":
            m = ev.get("msg") or {}
            if m.get("type") == "motion":
                self.motion[dev] = now
            elif m.get("type") in ("alarm", "fault"):
                self.alerts.append({"ts": now, "device": dev, "text": readable.message(m)})
        elif k == "alert":
            self.alerts.append({"ts": now, "device": dev, "text": readable.alert(ev["alert"], ev.get("body") or {})})
        elif k in ("online", "offline"):
            if k == "offline":
                self.alerts.append({"ts": now, "device": dev, "text": "went offline"})
        else:
            return
        self.version += 1


def snapshot(daemon, live: Live, now: float | None = None) -> dict:
    """The daemon's state as the pages need it: per site its poles (with the level they have now), bins, lockers.

    It reads the sessions' read-only view (what the control loops see), not `daemon.devices()`: that copies each
    device's whole state for the API, and the dashboard renders this twice a second under any load."""
    now = time.time() if now is None else now
    st = daemon.status()
    ctl = st["control"]
    lighting = daemon.control.lighting.sites
    sites: dict[str, dict] = {}
    for name in daemon.cfg.sites:
        sl = lighting.get(name)
        sites[name] = {"lighting": ctl["lighting"].get(name, {}), "poles": [], "bins": [], "lockers": [],
                       "edges": [list(e) for e in sl.cfg.edges] if sl else []}
    pickups = {p["id"]: p for items in ctl["pickups"].values() for p in items}
    lockers = ctl["lockers"]
    for d in daemon.sessions.devices.values():
        site = sites.get(d.site)
        if site is None:
            continue
        state, did = d.state, d.id
        if d.role == "light_pole":
            level, why = _pole_level(lighting.get(d.site), state, did, live.motion.get(did, 0.0), now)
            site["poles"].append({"id": did, "level": level, "why": why, "online": d.online,
                                  "fault": did in (site["lighting"].get("lamp_faults") or []),
                                  "report": readable.report(state), "seen": d.last_seen or None})
        elif d.role == "container_sensor":
            f = state.get("fill") or {}
            p = pickups.get(did)
            site["bins"].append({"id": did, "fill": f.get("fill"), "online": d.online,
                                 "trend": _trend(live.history.get(did), now),
                                 "status": (p["level"].replace("_", " ") + (", sensor " + p["fault"] if p.get("fault")
                                                                            else "")) if p else "ok"})
        elif d.role == "locker":
            site["lockers"].append({"id": did, "online": d.online,
                                    "comps": _compartments(state.get("locker") or {}, lockers.get(did) or {})})
    for site in sites.values():
        _layout(site["poles"], site["edges"])
    links = [{"name": lk["name"], "kind": lk["kind"], "connected": lk["connected"], "last_error": lk.get("last_error"),
              "frames": lk["counters"].get("rx_frames", 0),
              "drops": sum(v for k, v in lk["counters"].items() if k.startswith("drop_"))} for lk in st["links"]]
    return {"version": st.get("version", __version__), "uptime_s": st["uptime_s"], "backbone": st["backbone"],
            "devices": st["devices"], "clock": st.get("clock"), "links": links, "sites": sites,
            "alerts": list(live.alerts)[-15:]}


def _pole_level(sl, state: dict, pole: str, motion: float, now: float) -> tuple[int | None, str]:
    """The level a pole has now: its own motion, a pre-light from the gateway, or its base (the reports are slow)."""
    reported = (state.get("light") or {}).get("level")
    if sl is None or sl.dark is None:
        return reported, "last report"
    c = sl.cfg
    if not sl.dark:
        return c.day_level, "daylight"
    cap = sl.cap if sl.cap is not None else 100
    if now - motion < c.hold:
        return min(c.full, cap), "walker at this pole"
    if sl.prelit_until.get(pole, 0.0) > now:
        return min(c.prelight, cap), "pre-lit ahead of a walker"
    return min(c.base, cap), "base level at night"


def _trend(points, now: float) -> str:
    """The rate over the last hour; the points are in time order, so a bisection finds the hour's first."""
    if not points or len(points) < 2:
        return "not enough reports"
    i = bisect.bisect_left(points, now - 3600, key=_time)
    (t0, v0), (t1, v1) = (points[i], points[-1]) if i < len(points) else (points[-2], points[-1])
    if i == len(points) - 1 or t1 - t0 < 300:  # a rate needs some minutes of reports
        return "not enough reports"
    rate = (v1 - v0) / (t1 - t0) * 3600
    if abs(rate) < 1:
        return "steady"
    return "%s %d %% per hour" % ("rising" if rate > 0 else "falling", abs(rate))


def _time(point: tuple) -> float:
    return point[0]


def _compartments(tel: dict, ctl: dict) -> list[dict]:
    masks = [tel.get("occupied", 0), tel.get("open", 0), tel.get("locked", 0)]
    loans, overdue, opened = set(ctl.get("on_loan") or ()), set(ctl.get("overdue") or ()), ctl.get("open")
    n = max([m.bit_length() for m in masks] + [max(loans | overdue | {0})])
    out = []
    for c in range(1, n + 1):
        bit = 1 << (c - 1)
        words = ["occupied" if tel.get("occupied", 0) & bit else "empty",
                 "open" if tel.get("open", 0) & bit else "closed"]
        if c in overdue:
            words.append("OVERDUE")
        elif c in loans:
            words.append("on loan")
        out.append({"n": c, "text": ", ".join(words)})
    return out or [{"n": 0, "text": "no report yet"}]


def _layout(poles: list[dict], edges: list) -> None:
    """x = hops from the first pole along the path, y = branch; poles off the graph in a last column."""
    poles.sort(key=lambda p: p["id"])
    adj: dict[str, list[str]] = collections.defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    ids = [p["id"] for p in poles]
    depth: dict[str, int] = {}
    for start in ids:
        if start in depth or start not in adj:
            continue
        depth[start] = 0
        queue = [start]
        while queue:
            p = queue.pop(0)
            for q in sorted(adj[p]):
                if q not in depth:
                    depth[q] = depth[p] + 1
                    queue.append(q)
    last = max(depth.values(), default=-1) + 1
    rows: dict[int, int] = collections.Counter()
    for p in poles:
        x = depth.get(p["id"], last)
        p["x"], p["y"] = x, rows[x]
        rows[x] += 1


class Feed:
    """The overview's live parts, rendered once for every viewer: each generation holds, as server-sent event
    bytes, the parts that changed since the generation before, and makes the whole (for a viewer that is new or
    behind) when one asks."""

    def __init__(self):
        self.gen = 0
        self.parts: dict[str, str] = {}
        self.layout: list = []
        self.alerts = ""
        self.diff = b""
        self.renders = 0
        self._memo: dict = {}
        self._pieces: list = []
        self._whole: tuple[int, bytes] = (0, b"")

    @property
    def whole(self) -> bytes:
        if self._whole[0] != self.gen:
            self._whole = (self.gen, _sse("park", "".join(html for _, html in self._pieces)) + _sse("alerts",
                                                                                                  self.alerts))
        return self._whole[1]

    def update(self, snap: dict) -> bool:
        """Render `snap`; True (and a new generation) if anything a viewer sees changed."""
        self.renders += 1
        if len(self._memo) > 4 * len(self.parts) + 100:  # devices that went
            self._memo.clear()
        pieces = view.park_parts(snap, self._memo)
        alerts = view.alerts(snap["alerts"])
        layout = [key or html for key, html in pieces]
        parts = {key: html for key, html in pieces if key}
        out = []
        if layout != self.layout:
            out.append(_sse("park", "".join(html for _, html in pieces)))
        else:
            changed = {k: v for k, v in parts.items() if self.parts.get(k) != v}
            if changed:
                out.append(_sse("parts", json.dumps(changed, separators=(",", ":"))))
        if alerts != self.alerts:
            out.append(_sse("alerts", alerts))
        self.layout, self.parts, self.alerts = layout, parts, alerts
        if not out:
            return False
        self.gen += 1
        self.diff = b"".join(out)
        self._pieces = pieces
        return True


def _sse(event: str, data: str) -> bytes:
    return ("event: %s\n%s\n" % (event, "".join("data: %s\n" % line for line in data.split("\n")))).encode()


class Dashboard:
    """The web server of one daemon run."""

    def __init__(self, daemon, cfg, outcomes=None):
        self.daemon = daemon
        self.cfg = cfg
        self.live = Live(cfg.history)
        self.sessions = auth.Sessions(cfg.operators_file, cfg.session_hours)
        self.outcomes = outcomes if outcomes is not None else collections.Counter()
        self.url = ""
        self._runner = None
        self._clients = 0
        self._changed = asyncio.Event()
        self.feed = Feed()
        self.cpu_s = 0.0  # this thread's CPU in renders, live events and energy samples (park_dashboard_cpu)
        self._rendered = float("-inf")
        self._ticker: asyncio.Task | None = None
        self._unsubscribe = None
        self._metrics = None
        self.energy = energy.EnergyLog(os.path.join(daemon.cfg.state_dir, "energy.json"), cfg.lamp_watts)

    async def start(self) -> bool:
        """Listen; a port in use or a bad certificate is logged and the daemon runs on without a dashboard."""
        from aiohttp import web

        from gateway.web.metrics import registry

        self._metrics = registry(self.daemon, self.outcomes, self)
        app = web.Application(middlewares=[_headers_factory()])
        app.router.add_get("/", self.index)
        app.router.add_get("/device/{id}", self.device)
        app.router.add_post("/device/{id}/action", self.action)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/events", self.events)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/energy", self.energy_page)
        app.router.add_get("/opendata/{name}.{fmt}", self.opendata)
        app.router.add_static("/static/", STATIC)
        ctx = None
        if self.cfg.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
            except (OSError, ssl.SSLError) as e:
                log.error("dashboard not started: web.tls_cert/tls_key: %s", e)
                return False
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, ssl_context=ctx)
        try:
            await site.start()
        except OSError as e:
            log.warning("dashboard not started: cannot listen on %s: %s", self.cfg.listen, e.strerror or e)
            await self._runner.cleanup()
            self._runner = None
            return False
        port = self._runner.addresses[0][1]
        host = self.cfg.host if ":" not in self.cfg.host else "[%s]" % self.cfg.host
        self.url = "%s://%s:%d/" % ("https" if ctx else "http", host, port)
        self._unsubscribe = self.daemon.subscribe(self.live.on_event)
        self._ticker = asyncio.create_task(self._tick(), name="dashboard")
        log.info("dashboard: %s", self.url)
        return True

    @property
    def viewers(self) -> int:
        return self._clients

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self._ticker:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self.energy.save()

    async def _tick(self) -> None:
        seen, last, sampled, failed = -1, 0.0, 0.0, False
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            snap = None
            if self._clients and (self.live.version != seen or now - last >= REFRESH_S):
                seen, last = self.live.version, now
                try:
                    snap = await self._render()
                except Exception:  # noqa: BLE001 - the park runs on; the page stays as it was
                    if not failed:
                        log.exception("dashboard render failed (logged once)")
                    failed = True
            if now - sampled >= energy.SAMPLE_S:
                sampled = now
                t = time.thread_time()
                try:
                    self.energy.sample(snap or snapshot(self.daemon, self.live), self.daemon.cfg.sites)
                except Exception:  # noqa: BLE001 - a report must never stop the dashboard
                    log.exception("energy sample failed")
                self.cpu_s += time.thread_time() - t

    async def _render(self) -> dict:
        """One render for every viewer; they are woken only if something they see changed. The loop runs frames
        between the snapshot and the HTML, so neither half holds a pre-light up for the whole render."""
        t = time.thread_time()
        self._rendered = time.monotonic()
        snap = snapshot(self.daemon, self.live)
        self.cpu_s += time.thread_time() - t
        await asyncio.sleep(0)
        t = time.thread_time()
        if self.feed.update(snap):
            self._changed.set()
            self._changed = asyncio.Event()
        self.cpu_s += time.thread_time() - t
        return snap

    # -- who is asking

    def _who(self, request) -> tuple[str, str] | tuple[None, str]:
        w = self.sessions.who(request.cookies.get(COOKIE))
        return w if w else (None, "")

    def _html(self, request, title: str, body: str, status: int = 200, note: str = ""):
        from aiohttp import web

        who, csrf = self._who(request)
        return web.Response(text=view.page(title, body, who, csrf, note), status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    # -- pages

    async def index(self, request):
        snap = snapshot(self.daemon, self.live)
        return self._html(request, "Park at a glance", view.overview(snap))

    async def state(self, request):
        from aiohttp import web

        return web.json_response(snapshot(self.daemon, self.live), dumps=_dumps)

    async def device(self, request):
        did = request.match_info["id"]
        try:
            d = self.daemon.device(did)
        except LookupError:
            return self._html(request, "Unknown device", "<h1>No device %s</h1><p><a href=\"/\">All devices</a></p>"
                              % view.E(did), 404)
        what = {"light_pole": "lamp level (%)", "container_sensor": "fill level (%)",
                "locker": "occupied compartments"}.get(d["role"], "value")
        who, csrf = self._who(request)
        return self._html(request, "%s - park" % did, view.device(d, list(self.live.history.get(did, ())), what,
                                                                   who, csrf), note=request.query.get("note", ""))

    async def events(self, request):
        """Server-sent events: the whole overview's live parts first, then only the parts that changed."""
        from aiohttp import web

        if self._clients >= MAX_CLIENTS:
            return web.Response(status=503, text="too many dashboards open")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        if time.monotonic() - self._rendered > TICK_S:  # nobody was watching: the feed is old
            await self._render()
        self._clients += 1
        try:
            gen = None
            while True:
                changed = self._changed
                feed = self.feed
                if feed.gen != gen:
                    data = feed.diff if gen is not None and feed.gen == gen + 1 else feed.whole
                    gen = feed.gen
                    t = time.thread_time()
                    await resp.write(data)  # counts a wait for a slow viewer too: an upper bound
                    self.cpu_s += time.thread_time() - t
                    continue
                try:
                    await asyncio.wait_for(changed.wait(), 15.0)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients -= 1
        return resp

    async def metrics(self, request):
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def energy_page(self, request):
        return self._html(request, "Lighting energy", view.energy(self.energy.rows("night"),
                                                                  self.energy.rows("month"), self.cfg.lamp_watts))

    async def opendata(self, request):
        """CSV or JSON for the city's data platform: fill levels, pickups, lighting energy (nothing personal)."""
        from aiohttp import web

        name, fmt = request.match_info["name"], request.match_info["fmt"]
        if name not in energy.FIELDS or fmt not in ("csv", "json"):
            raise web.HTTPNotFound(text="open data: %s.{csv,json}" % ", ".join(energy.FIELDS))
        if name == "fill":
            rows = energy.fill_rows(snapshot(self.daemon, self.live), self.live.history)
        elif name == "pickups":
            rows = energy.pickup_rows(self.daemon.pickups())
        else:
            rows = self.energy.rows(name.split("-")[1])
        if fmt == "json":
            return web.json_response({"fields": energy.FIELDS[name], "rows": rows}, dumps=_dumps)
        return web.Response(text=energy.as_csv(rows, energy.FIELDS[name]), content_type="text/csv",
                            headers={"Content-Disposition": "inline; filename=%s.csv" % name})

    # -- operators

    async def login_form(self, request):
        return self._html(request, "Operator login", view.login("", _safe_next(request.query.get("next"))))

    async def login(self, request):
        from aiohttp import web

        form = await request.post()
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        got = await asyncio.to_thread(self.sessions.login, name, password)  # scrypt: keep the loop free
        if got is None:
            log.warning("dashboard: failed login for %r from %s", name[:32], request.remote)
            return self._html(request, "Operator login", view.login(
                "Wrong name or password (or too many attempts: wait 5 minutes).", _safe_next(form.get("next"))), 401)
        sid, _ = got
        audit.info("web: operator %s logged in from %s", name, request.remote)
        resp = web.HTTPSeeOther(_safe_next(form.get("next")))
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self.cfg.tls, path="/",
                        max_age=int(self.cfg.session_hours * 3600))
        raise resp

    async def logout(self, request):
        from aiohttp import web

        form = await request.post()
        who, csrf = self._who(request)
        if who and auth.hmac.compare_digest(str(form.get("csrf", "")), csrf):
            self.sessions.logout(request.cookies.get(COOKIE))
            audit.info("web: operator %s logged out", who)
        resp = web.HTTPSeeOther("/")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    async def action(self, request):
        """light / unlock (with a reason) / reboot, for a logged-in operator, audited like the CLI's commands."""
        from aiohttp import web

        from gateway.api import _refusal
        from gateway.downlink import CommandFailed
        from protocol.errors import SchemaError

        did = request.match_info["id"]
        who, csrf = self._who(request)
        form = await request.post()
        if not who:
            return self._html(request, "Log in first", '<h1>Log in first</h1><p>Only a logged-in operator may act. '
                              '<a href="/login?next=/device/%s">Log in</a></p>' % quote(did), 401)
        if not auth.hmac.compare_digest(str(form.get("csrf", "")), csrf):
            return self._html(request, "Refused", "<h1>Refused</h1><p>The form is stale; reload the page.</p>", 403)
        kind = form.get("action")
        try:
            if kind == "light":
                cmd = {"type": "light_set", "level": int(form.get("level", "")), "hold": int(form.get("hold") or 0)}
            elif kind == "unlock":
                reason = str(form.get("reason", "")).strip()
                if not reason:
                    raise ValueError("a reason is required for an unlock")
                cmd = {"type": "unlock", "comp": int(form.get("comp", "")), "reason": reason}
            elif kind == "reboot":
                cmd = {"type": "reboot", "delay": 0}
            else:
                raise ValueError("unknown action %r (light, unlock, reboot)" % kind)
        except ValueError as e:
            return self._redirect(did, "Not sent: %s" % (e if "invalid literal" not in str(e) else "a number is needed"))
        what = "%s to %s" % (cmd["type"], did)
        if kind == "unlock":
            what += " (compartment %s, reason %r)" % (cmd["comp"], cmd["reason"])
        try:
            res = await self.daemon.command(did, cmd, deadline=time.time() + ACTION_TIMEOUT_S)
            outcome, note = "ok", "%s: done" % what
        except CommandFailed as e:
            outcome, note = e.code, "%s failed: %s: %s" % (what, e.code, _refusal(e))
        except (SchemaError, ValueError, LookupError) as e:
            outcome, note = "bad_value", "%s refused: %s" % (what, getattr(e, "detail", None) or e)
        self.outcomes[outcome] += 1
        audit.info("web (operator %s): %s: %s", who, what, outcome if outcome != "ok" else (res or {}).get("result", "ok"))
        return self._redirect(did, note)

    def _redirect(self, did: str, note: str):
        from aiohttp import web

        raise web.HTTPSeeOther("/device/%s?note=%s" % (quote(did), quote(note[:300])))


def _safe_next(v) -> str:
    v = str(v or "/")
    return v if v.startswith("/") and not v.startswith("//") else "/"


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, default=str)


def _headers_factory():
    from aiohttp import web

    @web.middleware
    async def mw(request, handler):
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            e.headers.update(HEADERS)
            raise
        if not resp.prepared:
            resp.headers.update(HEADERS)
        return resp

    return mw


async def start(daemon, cfg, outcomes=None) -> Dashboard | None:
    """The daemon's dashboard, or None when `[web] listen` is empty or it could not listen."""
    if cfg is None or not cfg.listen:
        return None
    try:
        d = Dashboard(daemon, cfg, outcomes)
        return d if await d.start() else None
    except Exception as e:  # noqa: BLE001 - the park runs on without its dashboard (e.g. aiohttp unusable)
        log.error("dashboard not started: %s: %s", type(e).__name__, e)
        return None


def operators_path(cfg) -> str:
    return cfg.web.operators_file if cfg.web else os.path.join(cfg.state_dir, "operators.json")
