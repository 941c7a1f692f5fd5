"""The dashboard in a real headless Chromium (Debian's chromium, driven by Playwright) with axe-core for WCAG 2.1 AA:
it shows the park, moves when a walker starts the wave, refuses actions without login, audits them with one."""

import asyncio
import logging
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from gwharness import connected, load, provision, running, sim, until, write_config

from gateway.web import auth, server
from sim.devsim import SimLink

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = ROOT / "sim" / "mpvm" / "node_modules" / "axe-core" / "axe.min.js"
EDGES = [("l001", "l002"), ("l002", "l003")]
WCAG = "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']"


def _need_browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("chromium is not installed: run ./dev setup (apt package `chromium`)")
    if not AXE.exists():
        pytest.fail("axe-core is missing: run ./dev setup (npm ci in sim/mpvm)")


async def _axe(page) -> list[str]:
    await page.add_script_tag(path=str(AXE))
    v = await page.evaluate("axe.run(document, {runOnly: %s}).then(r => r.violations.map("
                            "v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))" % WCAG)
    return v


@pytest.fixture
async def park(tmp_path):
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}], edges=EDGES,
                        extra='[web]\nlisten = "127.0.0.1:0"\n')
    cfg = load(path)
    roles = [("l001", "light_pole"), ("l002", "light_pole"), ("l003", "light_pole"), ("c001", "container_sensor"),
             ("k001", "locker")]
    keys = provision(cfg, roles)
    devs = {d: link.add(sim(d, keys, r)) for d, r in roles}
    auth.add(cfg.web.operators_file, "alice", "correct horse battery")
    async with running(cfg) as d:
        await connected(link)
        for dev in devs.values():
            await dev.hello()
        for p in ("l001", "l002", "l003"):
            devs[p].send({"type": "light", "level": 10, "state": 1, "ambient": 3, "lamp_ma": 300})
        devs["c001"].send({"type": "fill", "fill": 62, "temp": 14, "batt": 185})
        devs["k001"].send({"type": "locker", "open": 0, "locked": 15, "occupied": 5, "pending": 0})
        await until(lambda: "locker" in d.sessions.devices["k001"].state, what="k001's report")
        assert d.dashboard is not None and d.dashboard.url.startswith("http://127.0.0.1:")
        yield d, devs, cfg
    await link.close()


async def test_the_dashboard_shows_the_park_live_and_accessibly(park, caplog):
    _need_browser()
    from playwright.async_api import async_playwright

    d, devs, cfg = park
    url = d.dashboard.url
    caplog.set_level(logging.INFO, logger="park.api")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            ctx = await browser.new_context(bypass_csp=True)  # axe is injected as an inline script
            page = await ctx.new_page()
            await page.goto(url)
            assert await page.title() == "Park at a glance"
            assert "10 %" in await page.inner_text("#pole-l002")
            # the report's age is kept current by the page itself (the row is not sent again for it)
            await page.wait_for_function("/, \\d+s ago/.test(document.querySelector('#pole-l002').innerText)",
                                         timeout=5_000)
            assert "62 %" in await page.inner_text("#bin-c001")
            assert "occupied, closed" in await page.inner_text("#locker-k001")
            assert await _axe(page) == []
            # a walker at l001: the page (not reloaded) shows l001 at full and l002 pre-lit ahead of him
            await devs["l001"].event({"type": "motion", "count": 1})
            await page.wait_for_function(
                "document.querySelector('#pole-l002').innerText.includes('pre-lit')", timeout=10_000)
            assert "70 %" in await page.inner_text("#pole-l002")
            assert "walker" in await page.inner_text("#pole-l001")
            await page.wait_for_function(  # the plan's dot too, and its text title for a screen reader
                "document.querySelector('#dot-l002 text').textContent.includes('70%')", timeout=5_000)
            assert "l002 70 %" in await page.text_content("#plan-stadtpark")
            await page.goto(url + "energy")
            assert "Lighting energy" in await page.inner_text("h1")
            assert await _axe(page) == []
            await page.goto(url)
            # keyboard: the first Tab reaches the skip link, and it leads to the content
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.textContent") == "Skip to content"

            # without login: no action forms, and a forged post is refused and never sent
            await page.goto(url + "device/k001")
            assert await page.locator("form[action='/device/k001/action']").count() == 0
            assert await _axe(page) == []
            r = await page.request.post(url + "device/k001/action",
                                        form={"action": "unlock", "comp": "2", "reason": "x", "csrf": ""})
            assert r.status == 401
            assert not [c for c in devs["k001"].commands if c["type"] == "unlock"]

            # an operator logs in and unlocks with a reason: the locker gets it, the audit log has it
            await page.click("#act-h ~ p a")  # the actions' own link: back here after login
            await page.fill("#name", "alice")
            await page.fill("#password", "wrong password!")
            await page.click("button[type=submit]")
            assert "Wrong name or password" in await page.inner_text("[role=alert]")
            assert await _axe(page) == []
            await page.fill("#name", "alice")
            await page.fill("#password", "correct horse battery")
            await page.click("button[type=submit]")
            await page.wait_for_url(url + "device/k001")
            assert await _axe(page) == []
            await page.fill("#comp", "2")
            await page.fill("#reason", "ticket 4411")
            await page.click("button:has-text('Unlock')")
            await page.wait_for_url(lambda u: "/device/k001?note=" in u)
            assert "done" in await page.inner_text("[role=status]")
            assert [c["comp"] for c in devs["k001"].commands if c["type"] == "unlock"] == [2]
            assert any("web (operator alice): unlock to k001 (compartment 2, reason 'ticket 4411')" in r.getMessage()
                       for r in caplog.records), [r.getMessage() for r in caplog.records]
            # a post with a stale form token is refused even for a logged-in operator
            r = await page.request.post(url + "device/k001/action",
                                        form={"action": "reboot", "csrf": "not-the-token"})
            assert r.status == 403
        finally:
            await browser.close()


async def test_metrics_for_prometheus(park):
    d, devs, cfg = park
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(d.dashboard.url + "metrics", timeout=10).read().decode())
    assert 'park_devices{state="online"} 5.0' in text
    assert 'park_link_frames_total{link="vb0"}' in text and "park_outbox_depth" in text
    assert "park_commands_total" in text or "park_commands" in text
    assert "park_dashboard_cpu_seconds_total" in text and "park_dashboard_viewers 0.0" in text


def test_the_network_needs_tls_and_there_is_no_default_operator(tmp_path):
    from gateway.config import ConfigError

    path = write_config(str(tmp_path), [], extra='[web]\nlisten = "0.0.0.0:8380"\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert e.value.key == "web.listen" and "tls_cert" in str(e.value)
    path = write_config(str(tmp_path), [])
    cfg = load(path)
    assert cfg.web.host == "127.0.0.1" and not os.path.exists(cfg.web.operators_file)
    s = auth.Sessions(cfg.web.operators_file, 1)
    assert s.login("admin", "admin") is None and s.login("alice", "") is None
    with pytest.raises(auth.OperatorError):
        auth.add(cfg.web.operators_file, "alice", "short")
    auth.add(cfg.web.operators_file, "alice", "long enough pass")
    assert os.stat(cfg.web.operators_file).st_mode & 0o077 == 0 and "long enough" not in open(
        cfg.web.operators_file).read()
    assert s.login("alice", "long enough pass") is not None
    for _ in range(auth.MAX_FAILS):
        assert s.login("alice", "guess") is None
    assert s.login("alice", "long enough pass") is None  # locked out for a while


def test_energy_follows_the_firmware_curve_and_counts_only_the_dark(tmp_path):
    from light_pole import curve

    from gateway.web import energy

    for p in range(101):
        assert abs(energy.power_fraction(p) * 65535 - curve.table(p)) <= 1, p
    cfg = load(write_config(str(tmp_path), []))
    log = energy.EnergyLog(str(tmp_path / "energy.json"), 40.0)
    t0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: the night of the 14th

    def snap(dark, levels):
        return {"sites": {"stadtpark": {"lighting": {"dark": dark}, "poles": [{"level": v} for v in levels]}}}

    for i in range(720):  # an hour in 5 s steps: two poles at base, one at full
        log.sample(snap(True, [10, 10, 100]), cfg.sites, t0 + 5 * i)
    log.sample(snap(False, [0, 0, 0]), cfg.sites, t0 + 3605)
    (night,) = log.rows("night")
    assert night["night"] == "2027-01-14" and night["poles"] == 3
    assert abs(night["full_level_wh"] - 3 * 40 * 3595 / 3600) < 0.01
    expect = 40 * (1 + 2 * energy.power_fraction(10)) * 3595 / 3600
    assert abs(night["energy_wh"] - expect) < 0.01 and 60 < night["saving_pct"] < 70
    log.save()
    again = energy.EnergyLog(str(tmp_path / "energy.json"), 40.0)
    (month,) = again.rows("month")  # read back from the file
    assert month["month"] == "2027-01" and month["energy_wh"] == night["energy_wh"]


async def test_open_data_is_documented_fields_and_nothing_personal(park):
    import json

    d, devs, cfg = park

    def get(path):
        return urllib.request.urlopen(d.dashboard.url + path, timeout=10).read().decode()

    fill = await asyncio.to_thread(get, "opendata/fill.csv")
    assert fill.splitlines()[0] == "site,container,time,fill_pct" and "stadtpark,c001," in fill and ",62" in fill
    pk = json.loads(await asyncio.to_thread(get, "opendata/pickups.json"))
    assert pk["fields"] == ["site", "container", "level", "fill_pct", "since"] and pk["rows"] == []
    night = await asyncio.to_thread(get, "opendata/energy-night.csv")
    assert night.splitlines()[0] == "site,night,poles,energy_wh,full_level_wh,saving_wh,saving_pct"
    for doc in (fill, json.dumps(pk), night):
        assert "k001" not in doc and "token" not in doc


async def _next_event(stream) -> tuple[str, str]:
    """One server-sent event (name, data) from an aiohttp response stream; comments are skipped."""
    name, data = "message", []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 10)).decode().rstrip("\n")
        if not line:
            if data:
                return name, "\n".join(data)
            continue
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


async def test_live_updates_are_rendered_once_for_all_viewers_and_carry_only_what_changed(park):
    """Issue 12's cost: one render per tick whatever the number of viewers, and after the whole page only the
    changed parts (a bin's row, not the poles' or the locker's)."""
    import json

    import aiohttp

    d, devs, cfg = park
    async with aiohttp.ClientSession() as http:
        a = await http.get(d.dashboard.url + "events")
        b = await http.get(d.dashboard.url + "events")
        for viewer in (a, b):
            first = {await _next_event(viewer.content), await _next_event(viewer.content)}
            assert {n for n, _ in first} == {"park", "alerts"}
            assert 'id="bin-c001"' in dict(first)["park"] and "62 %" in dict(first)["park"]
        renders, t0 = d.dashboard.feed.renders, time.monotonic()
        devs["c001"].send({"type": "fill", "fill": 81, "temp": 14, "batt": 185})
        got = []
        for viewer in (a, b):
            name, data = await _next_event(viewer.content)
            while name == "alerts":
                name, data = await _next_event(viewer.content)
            assert name == "parts", (name, data[:200])
            got.append(data)
        assert got[0] == got[1]  # the same bytes, rendered once
        parts = json.loads(got[0])
        assert "81 %" in parts["bin-c001"] and parts["bin-c001"].startswith('<tr id="bin-c001">')
        assert not [k for k in parts if k.startswith(("pole-", "locker-", "dot-", "plan-"))], sorted(parts)
        ticks = (time.monotonic() - t0) / server.TICK_S + 1
        assert d.dashboard.feed.renders - renders <= ticks  # one render a tick, not one per viewer and tick
        a.close()
        b.close()


def test_a_bins_trend_is_its_rate_over_the_last_hour():
    import collections

    now = 1_800_000_000.0

    def trend(*points):
        return server._trend(collections.deque((now - age, v) for age, v in points), now)

    assert trend((7200, 10), (3000, 20), (600, 30), (0, 40)) == "rising 24 % per hour"  # from the hour's first
    assert trend((7200, 10), (6000, 50)) == "rising 120 % per hour"  # none in the hour: the last two
    assert trend((7200, 90), (3000, 60), (0, 30)) == "falling 36 % per hour"
    assert trend((7200, 10), (10, 20)) == "not enough reports"  # one point in the hour
    assert trend((100, 1), (0, 50)) == "not enough reports"  # minutes are needed for a rate
    assert trend((3000, 50), (0, 50)) == "steady"
    assert trend((0, 50)) == "not enough reports"
