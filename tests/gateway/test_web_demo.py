"""`./dev demo --duration 60 --night`, piped: the whole story within the README's minute, in words, with the
dashboard's address on a line of its own and no screen repeated every two seconds."""

import asyncio
import re
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_the_demo_tells_its_story_in_a_minute_and_serves_the_dashboard():
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "sim", "demo", "--duration", "60", "--night",
                                             cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines = []
    page = ""
    try:
        async with asyncio.timeout(200):
            while True:
                raw = await p.stdout.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\n")
                lines.append(line)
                m = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+/)", line)
                if m:
                    url = m.group(1)
                    page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
            await p.wait()
    finally:
        if p.returncode is None:
            p.kill()
    out = "\n".join(lines)
    assert p.returncode == 0, (await p.stderr.read()).decode()[-2000:]
    assert "Park at a glance" in page and "l001" in page and "Waste containers" in page
    # the story: a walker and the wave, a bin to a pickup, a loan that becomes overdue, a dead lamp
    wave = [x for x in lines if "lamps %" in x]
    assert any(re.search(r"lamps % [^|]*\b70\b", x) for x in wave), wave  # a pole pre-lit ahead of a walker
    assert any(re.search(r"lamps % [^|]*\b100\b", x) for x in wave), wave  # a pole at full under the walker
    assert len({x.split("|")[0].split("lamps")[1] for x in wave}) > 2, wave  # the column changes
    assert "c001 alert: collection needed" in out and "k001 alert: overdue (compartment 2" in out, out
    assert "l004 alert: lamp fault" in out, out
    end = lines[-1]
    assert end.startswith("demo finished after 6") and "pickups: c001" in end and "overdue: k001 compartment 2" in end
    assert "lamp faults: l004" in end and "{" not in end, end
    # words, not codes; nothing repeated as a whole screen; no alarm outside the story
    assert not re.search(r"code=|result=\d|state \d|0b[01]+", out), out
    assert out.count("story so far") == 0 and len(lines) < 120, len(lines)
    assert "low_battery" not in out and "tamper" not in out, out
