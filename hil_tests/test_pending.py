"""Scenarios written down but not yet running on the bench: each is xfail with the precise reason."""
from __future__ import annotations

import pytest

CONTAINER_FW = pytest.mark.xfail(run=False, strict=True, reason=(
    "firmware/container_sensor has no App yet (engineer R): nothing to deploy on c001"))
NOT_BUILT = "scenario not yet implemented by engineer T within the deadline; see docs/hil.md 'Status'"


@CONTAINER_FW
@pytest.mark.needs("peripherals")
def test_container_fills_near_full_and_full_reach_backbone_and_pickup_list(boards):
    boards("c001")


@pytest.mark.needs("peripherals")
@pytest.mark.xfail(run=False, strict=True, reason=NOT_BUILT + " (locker firmware and gateway lockers are ready)")
def test_locker_tokens_valid_once_replayed_expired_forged_wrong_compartment_and_tamper():
    raise AssertionError("not implemented")


@pytest.mark.needs("broker_outage", "link_unplug", "brownout", "gateway_kill")
@pytest.mark.xfail(run=False, strict=True, reason=NOT_BUILT + " (fixtures exist: Mosquitto stop/start, "
                   "GatewayProcess.kill9, PowerDriver.cycle)")
def test_faults_lose_nothing_broker_outage_unplug_brownout_gateway_kill9():
    raise AssertionError("not implemented")
