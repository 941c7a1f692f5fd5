"""`/metrics` for the city's Prometheus: read from the daemon's status at scrape time, nothing on the frame path."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry


class GatewayCollector(Collector):
    def __init__(self, daemon, outcomes, dashboard=None):
        self.daemon = daemon
        self.outcomes = outcomes  # command result -> count (API and dashboard)
        self.dashboard = dashboard

    def collect(self):
        st = self.daemon.status()
        frames = CounterMetricFamily("park_link_frames", "Frames received per link", labels=["link"])
        drops = CounterMetricFamily("park_link_drops", "Frames dropped per link and reason", labels=["link", "reason"])
        up = GaugeMetricFamily("park_link_up", "1 if the link is connected", labels=["link"])
        for lk in st["links"]:
            c = lk["counters"]
            frames.add_metric([lk["name"]], c.get("rx_frames", 0))
            up.add_metric([lk["name"]], 1 if lk["connected"] else 0)
            for k, v in c.items():
                if k.startswith("drop_"):
                    drops.add_metric([lk["name"], k[5:]], v)
        yield frames
        yield drops
        yield up
        bb = st["backbone"]
        yield GaugeMetricFamily("park_outbox_depth", "Messages waiting in the outbox", value=bb.get("outbox_depth", 0))
        yield GaugeMetricFamily("park_outbox_oldest_seconds", "Age of the oldest message in the outbox",
                                value=bb.get("oldest_age_s") or 0)
        yield GaugeMetricFamily("park_backbone_connected", "1 if the MQTT backbone is connected",
                                value=1 if bb.get("connected") else 0)
        yield CounterMetricFamily("park_backbone_published", "Messages the broker acknowledged",
                                  value=bb.get("published", 0))
        ob = CounterMetricFamily("park_outbox_dropped", "Messages dropped by the outbox caps", labels=["reason"])
        for k, v in (bb.get("dropped") or {}).items():
            ob.add_metric([k], v)
        yield ob
        dev = GaugeMetricFamily("park_devices", "Registered devices by state", labels=["state"])
        dev.add_metric(["online"], st["devices"]["online"])
        dev.add_metric(["offline"], st["devices"]["offline"])
        yield dev
        sess = CounterMetricFamily("park_session_events", "Session counters (nacks, resyncs, queue full...)",
                                   labels=["name"])
        for k, v in sorted(st["counters"].items()):
            sess.add_metric([k], v)
        yield sess
        cmd = CounterMetricFamily("park_commands", "Operator and dashboard command outcomes", labels=["result"])
        for k, v in sorted(self.outcomes.items()):
            cmd.add_metric([k], v)
        yield cmd
        yield CounterMetricFamily("park_prelights", "Pre-light commands sent",
                                  value=self.daemon.control.lighting.prelights)
        if self.dashboard is not None:
            db = self.dashboard
            yield CounterMetricFamily("park_dashboard_cpu_seconds", "CPU the dashboard's renders, live events and "
                                      "energy samples took (what it costs the gateway)", value=db.cpu_s)
            yield CounterMetricFamily("park_dashboard_renders", "Renders of the live page (one per tick for all "
                                      "viewers)", value=db.feed.renders)
            yield GaugeMetricFamily("park_dashboard_viewers", "Pages following the live events", value=db.viewers)


def registry(daemon, outcomes, dashboard=None) -> CollectorRegistry:
    r = CollectorRegistry(auto_describe=False)
    r.register(GatewayCollector(daemon, outcomes, dashboard))
    return r
