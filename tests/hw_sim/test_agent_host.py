"""The real agent hosted in-process on the simulation clock: vehicle traffic reaches its records."""

from __future__ import annotations

import asyncio

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
