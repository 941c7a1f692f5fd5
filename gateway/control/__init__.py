"""Local control loops: what the park must do even with the backbone away.

Control is the stage after the sessions (seams.Stage): it receives every
authentic, fresh message after the session rules ran and routes it to the loop
for the device's role. Loops see the devices through a read-only view
(seams.Devices) and act through two narrow calls: cmd(device_id, msg) -> future
(seams.SendCommand, a downlink command) and alert(device, kind, body,
event_id, ts) (seams.RaiseAlert, a derived event for the backbone).
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.control.lighting import Lighting
from gateway.control.lockers import Lockers
from gateway.control.waste import Waste
from gateway.events import Faults
from gateway.seams import Devices, RaiseAlert, SendCommand

log = logging.getLogger("park.control")


class Control:
    def __init__(self, cfg, devices: Devices, cmd: SendCommand, alert: RaiseAlert, clock=time.time,
                 faults: Faults | None = None):
        self.cfg = cfg
        self.clock = clock
        self.faults = faults if faults is not None else Faults()
        self.lighting = Lighting(cfg.sites, cmd, alert, devices)
        self.waste = Waste(cfg.sites, alert)
        self.lockers = Lockers(cfg.sites, cmd, alert, devices)
        self._by_role: dict[str, Lighting | Waste | Lockers] = {
            "light_pole": self.lighting, "container_sensor": self.waste, "locker": self.lockers}

    def on_message(self, s, msg: dict, now: float) -> None:
        loop = self._by_role.get(s.role)
        if loop is not None:
            loop.on_message(s, msg, now)

    def on_hello(self, s) -> None:
        if s.role == "light_pole":
            self.lighting.on_hello(s, self.clock())

    def on_online(self, s, online: bool) -> None:
        pass

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.lighting.tick(now)
        self.lockers.check_overdue(now)

    async def run(self, period: float = 15.0) -> None:
        while True:
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - a loop bug must not stop the lights
                self.faults.record("control_tick", e)
            await asyncio.sleep(period)

    def snapshot(self) -> dict:
        """What must survive a restart: loans running for days, containers already reported full, lamp faults."""
        return {"waste": self.waste.snapshot(), "lockers": self.lockers.snapshot(),
                "lighting": self.lighting.snapshot()}

    def restore(self, state: dict) -> None:
        for name, loop in (("waste", self.waste), ("lockers", self.lockers), ("lighting", self.lighting)):
            if name in state:
                try:
                    loop.restore(state[name])
                except (KeyError, TypeError, ValueError) as e:  # an older layout: start that loop afresh
                    log.warning("saved %s state not restored: %s", name, e)

    def status(self) -> dict:
        return {"lighting": self.lighting.status(), "pickups": self.waste.pickups(), "lockers": self.lockers.status()}
