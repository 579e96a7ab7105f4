"""The real agent hosted in-process on the simulation clock: vehicle traffic reaches its records."""

from __future__ import annotations

import asyncio

import pytest

from hw_sim.agent_host import AgentHost, HostConfig
from hw_sim.backends import owner_app
from hw_sim.clock import ManualClock
from hw_sim.vehicle import VehicleConfig, VehicleModel


async def test_vehicle_commands_are_judged_and_recorded_on_simulated_time(tmp_path):
    clock = ManualClock()
    host = AgentHost(tmp_path / "car1", HostConfig(device_id="car1", device_class="tcu"), clock)
    await host.start()
    runner = asyncio.create_task(host.run())
    try:
        link = host.link()
        car = VehicleModel(VehicleConfig(), link=link)
        app = owner_app(clock, seed=4)
        owner = app.principal("owner-1", "owner", signing=True)
        app.enroll_key(owner, car)
        parked = await app.send(car, owner, "door_unlock")
        car.enter()
        car.drive_to("highway", 80)
        clock.advance(60_000)
        car.tick(60)
        moving = await app.send(car, owner, "door_unlock")
        assert parked.verdict.v == "allow" and "TCU-01" not in parked.verdict.rules
        assert "TCU-01" in moving.verdict.rules and moving.verdict.v in ("alert", "block")
        await host.ledger.drained()
    finally:
        await host.stop()
        await runner
    recs = host.records()
    cmds = [r for r in recs if r["kind"] == "cmd"]
    assert [r["api"] for r in cmds] == ["tcu.door_unlock", "tcu.door_unlock"]
    assert cmds[0]["sub"] == car.vin and cmds[0]["src"]["id"] == "owner-1"
    assert cmds[1]["wall"] - cmds[0]["wall"] >= 60_000          # simulated time, not wall time
    alerts = [r for r in recs if r["kind"] == "alert"]
    assert any(a["x"]["rule"] == "TCU-01" and a["x"]["cmd_seq"] == cmds[1]["seq"] for a in alerts)
    host.close()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_csms_commands_reach_the_rules_through_the_ocpp_guard_with_snake_case_args(tmp_path, version):
    """The charger's real OCPP guard (over LoopShim) gives the rules snake_case args and the
    OCPP uniqueId as src.msg_id: an http firmware URL fires CP-06, a benign profile read does not."""
    from hw_sim.charger import ChargerConfig
    from hw_sim.clock import ClockConfig, SimClock
    from hw_sim.csms import Csms
    from hw_sim.devices import SimCharger

    clock = SimClock(ClockConfig(factor=10.0))
    host = AgentHost(tmp_path / "cp1", HostConfig(device_id="cp1", device_class="charger"), clock)
    await host.start()
    runner = asyncio.create_task(host.run())
    csms = Csms(clock, heartbeat_s=900)
    await csms.start()
    charger = SimCharger(ChargerConfig(charger_id="cp1", connectors=1), host.link(), clock, csms, ocpp_version=version)
    session = asyncio.create_task(charger.run())
    try:
        await charger.ready(15)
        await charger.read_config()
        if version == "1.6":
            await csms.send("cp1", "UpdateFirmware", location="http://203.0.113.7/fw-9.9.bin",
                            retrieve_date=csms.now(), unique_id="attack-fw-1")
        else:
            await csms.send("cp1", "UpdateFirmware", request_id=7, unique_id="attack-fw-1", firmware={
                "location": "http://203.0.113.7/fw-9.9.bin", "retrieve_date_time": csms.now()})
        await host.ledger.drained()
    finally:
        charger.stop()
        await asyncio.wait_for(session, 15)
        await csms.close()
        await host.stop()
        await runner
    recs = host.records()
    host.close()
    cmds = {r["api"]: r for r in recs if r["kind"] == "cmd"}
    fw = cmds["ocpp.UpdateFirmware"]
    assert "CP-06" in fw["r"] and fw["src"]["msg_id"] == "attack-fw-1"
    args = fw["x"]["args"]
    assert "retrieveDate" not in args and "retrieveDateTime" not in str(args)
    assert ("location" in args) if version == "1.6" else ("retrieve_date_time" in args["firmware"])
    read = "ocpp.GetConfiguration" if version == "1.6" else "ocpp.GetVariables"
    assert any(r["api"] == read for r in recs)                      # recorded ...
    assert not any(r["kind"] == "alert" and r["api"] == read for r in recs)   # ... and quiet
    assert all(r["v"] == "allow" for api, r in cmds.items() if api != "ocpp.UpdateFirmware")
