"""`park-gateway update` (real processes, real socket): import checks the city's signature without a daemon,
plan/status/halt/resume go to the running daemon, refusals are one line with the reason, --json for scripts."""

import json
import os

import pytest

from gwharness import connected, load, provision, running, until, write_config
from test_cli import cli
from test_update import make_bundle

from protocol import bundle
from sim.devsim import SimLink
from sim.devsim_ota import SimOtaDevice


@pytest.fixture(scope="module")
def key():
    return bundle.new_release_key()


async def test_import_plan_status_halt_resume(tmp_path, key):
    pub = tmp_path / "release.pub"
    pub.write_bytes(bundle.public_pem(key.public_key()))
    (tmp_path / "good.bundle").write_bytes(make_bundle(key))
    (tmp_path / "evil.bundle").write_bytes(make_bundle(bundle.new_release_key()))
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}],
                        extra='[update]\nrelease_keys = ["%s"]\nlink_rate = 2000\n' % pub)
    cfg = load(path)
    keys = provision(cfg, [("l001", "light_pole"), ("l002", "light_pole")])
    rc, out, err = await cli("--config", path, "update", "import", tmp_path / "evil.bundle")
    assert rc == 1 and err.startswith("park-gateway: unknown_key: ") and "Traceback" not in err
    rc, out, err = await cli("--config", path, "update", "import", tmp_path / "good.bundle", "--json")
    assert rc == 0, err
    imp = json.loads(out)
    assert imp["version"] == "1.1.0" and imp["role"] == "light_pole" and imp["new"] is True
    rc, out, err = await cli("--config", path, "update", "status")  # no daemon: from the store
    assert rc == 0 and "1.1.0" in out and "evil.bundle: unknown_key" in out
    try:
        async with running(cfg):
            await connected(link)
            devs = [link.add(SimOtaDevice(i, keys[i], "light_pole")) for i in ("l001", "l002")]
            for dev in devs:
                await dev.hello()
            rc, out, err = await cli("--config", path, "update", "plan", "--bundle", str(imp["bundle"]),
                                     "--site", "stadtpark", "--json")
            assert rc == 0, err
            rid = json.loads(out)["rollout"]
            await until(lambda: devs[0].chunks > 2, 10, "chunks")
            rc, out, err = await cli("--config", path, "update", "halt", str(rid))
            assert rc == 0 and "halted (operator)" in out
            rc, out, err = await cli("--config", path, "update", "status", str(rid), "--json")
            st = json.loads(out)
            l001 = st["devices"][0]
            assert st["state"] == "halted" and l001["canary"] and 0 < l001["bytes"] < l001["size"]
            rc, out, err = await cli("--config", path, "update", "resume", str(rid))
            assert rc == 0, err
            for _ in range(100):
                rc, out, err = await cli("--config", path, "update", "status", str(rid), "--json")
                if json.loads(out)["state"] == "done":
                    break
            assert json.loads(out)["counts"] == {"valid": 2}
            rc, out, err = await cli("--config", path, "update", "status")
            assert "l002" in out and "valid" in out
            rc, out, err = await cli("--config", path, "update", "halt", "99", "--json")
            assert rc == 1 and json.loads(out)["error"]["code"] == "unknown_rollout"
    finally:
        await link.close()
    assert os.stat(cfg.update.store).st_mode & 0o077 == 0
