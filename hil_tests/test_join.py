"""Scenario: a technician provisions a board, it joins the gateway, its telemetry reaches the backbone.
On the virtual bench the pole joins over Wi-Fi (park-device provision --link wifi), as in the park."""
from __future__ import annotations



def test_provisioned_pole_joins_and_reports_senml_on_the_backbone(boards, gateway, backbone, bench):
    st = boards("l001")["l001"]
    assert st.results["provision"]["registered"]["how"] == "registry"
    # deploying onto the role image again verified every file and uploaded none
    assert st.results["deploy"]["uploaded"] == [] and st.results["deploy"]["verified"] > 10
    gateway.write_config()
    gateway.start()
    site = bench.site
    tele = f"park/{site}/device/l001/telemetry"

    def light_pack():
        for pack in backbone.json(tele):
            names = {r.get("n") for r in pack}
            if "level" in names:
                return pack
        return None
    pack = backbone.wait(light_pack, timeout=60, what=f"light telemetry on {tele}\n{gateway.tail()}")
    assert pack[0]["bn"] == f"urn:dev:park:{site}:l001:" and isinstance(pack[0]["bt"], (int, float))
    recs = {r["n"]: r for r in pack}
    assert recs["level"]["u"] == "%" and 0 <= recs["level"]["v"] <= 100
    avail = backbone.wait(lambda: backbone.json(f"park/{site}/device/l001/availability"),
                          what="availability")
    assert avail[-1]["state"] == "online"
    # the heartbeat diagnostics of the real firmware arrive too (fw version from firmware/light_pole)
    hb = backbone.wait(lambda: next((p for p in backbone.json(tele) if any(r.get("n") == "fw" for r in p)), None),
                       what="heartbeat pack")
    assert {r["n"]: r["v"] for r in hb}["fw"] == 10000
    if bench.board("l001").link == "wifi":  # provisioned for its radio, and heard on it
        assert st.results["provision"]["link"] == {"kind": "wifi", "uart": 1, "ssid": "hil-park",
                                                   "host": "10.0.0.1", "port": 7000, "psk": "(set)"}
        assert gateway.device("l001")["link"].startswith("wifi/")
