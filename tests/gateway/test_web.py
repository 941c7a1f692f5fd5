"""The dashboard in a real headless Chromium (Debian's chromium, driven by Playwright) with axe-core for WCAG 2.1 AA:
it shows the park, moves when a walker starts the wave, refuses actions without login, audits them with one."""

import asyncio
import logging
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from gwharness import connected, load, provision, running, sim, until, write_config

from gateway.web import auth
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
            assert "62 %" in await page.inner_text("#bin-c001")
            assert "occupied, closed" in await page.inner_text("#locker-k001")
            assert await _axe(page) == []
            # a walker at l001: the page (not reloaded) shows l001 at full and l002 pre-lit ahead of him
            await devs["l001"].event({"type": "motion", "count": 1})
            await page.wait_for_function(
                "document.querySelector('#pole-l002').innerText.includes('pre-lit')", timeout=10_000)
            assert "70 %" in await page.inner_text("#pole-l002")
            assert "walker" in await page.inner_text("#pole-l001")
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
