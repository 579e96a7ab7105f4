"""Benign day files load, and each runs on its device producing the traffic it describes."""

from __future__ import annotations

import asyncio
import random

import pytest

from hw_sim.charger import ChargerConfig
from hw_sim.clock import ClockConfig, SimClock
from hw_sim.csms import Csms
from hw_sim.days import DayError, load_day, load_days, plan, run_day
from hw_sim.devices import SimCharger, SimVehicle
from hw_sim.link import RecordingLink
from hw_sim.vehicle import VehicleConfig


def test_every_day_file_loads_and_plans_deterministically():
    days = load_days()
    assert {"commute", "weekend", "service", "home_charger", "public_charger"} <= set(days)
    for day in days.values():
        a = plan(day, random.Random(7), 0)
        b = plan(day, random.Random(7), 0)
        assert a == b and all(0 <= t < 36 * 3_600_000 for t, _ in a)


def test_bad_day_file_is_refused_with_its_name(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('device = "vehicle"\n[[event]]\nat = "07:00"\nactions = [{ op = "teleport" }]\n')
    with pytest.raises(DayError, match="bad.toml.*teleport"):
        load_day(p)


async def test_commute_day_drives_to_work_and_back_and_uses_the_app():
    clock = SimClock(ClockConfig(factor=20_000))
    link = RecordingLink()
    car = SimVehicle(VehicleConfig(), link, clock, seed=3, tick_s=30)
    runner = asyncio.create_task(car.run())
    try:
        await run_day(load_days()["commute"], car, random.Random(3), clock.now_ms() - clock.now_ms() % 86_400_000)
    finally:
        car.stop()
        await runner
    apis = [a for a, _ in link.records]
    assert apis.count("tcu.event.local_unlock") >= 2 and apis.count("tcu.event.local_lock") >= 2
    assert car.model.geofence() == "home"
    assert all(src["id"] == car.owner.id for _, _, src, _ in link.checks)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_home_charger_day_charges_through_ocpp(version):
    clock = SimClock(ClockConfig(factor=20_000))
    csms = Csms(clock, heartbeat_s=3600)
    await csms.start()
    link = RecordingLink()
    ch = SimCharger(ChargerConfig(charger_id="HOME1", connectors=1), link, clock, csms, ocpp_version=version,
                    physics_interval_s=60)
    task = asyncio.create_task(ch.run())
    try:
        await ch.ready()
        start = clock.now_ms() - clock.now_ms() % 86_400_000 + 86_400_000
        await run_day(load_days()["home_charger"], ch, random.Random(5), start)
        assert ch.model.connectors[1].energy_wh > 10_000       # an evening of 16 A
        assert ch.model.connectors[1].tx_id is None and ch.model.connectors[1].status == "Available"
        assert link.state["tx.active"] is False
    finally:
        ch.stop()
        await asyncio.wait_for(task, 5)
        await csms.close()
