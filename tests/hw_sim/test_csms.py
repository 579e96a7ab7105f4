"""The simulated CSMS with the simulated charger (no agent): benign operations both versions."""

from __future__ import annotations

import asyncio

import pytest

from hw_sim.charger import ChargerConfig, ChargerModel
from hw_sim.charger_run import ChargerSession, SessionConfig
from hw_sim.clock import ClockConfig, SimClock
from hw_sim.csms import Csms, CsmsError
from hw_sim.link import RecordingLink


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_benign_day_ops_start_charge_stop_and_firmware(version):
    clock = SimClock(ClockConfig(factor=3600.0))
    csms = Csms(clock, heartbeat_s=60)
    await csms.start()
    model = ChargerModel(ChargerConfig(charger_id="CP07", connectors=1))
    session = ChargerSession(model, RecordingLink(), clock, SessionConfig(
        csms_url=csms.url("CP07"), ocpp_version=version, physics_interval_s=30))
    task = asyncio.create_task(session.run())
    try:
        await csms.wait_connected("CP07")
        model.plug_in(1, ev_demand_a=32)
        done = await csms.benign_day_ops("CP07", hours=0.5)
        assert done == ["remote_start", "remote_stop"]
        assert model.connectors[1].energy_wh > 0 and model.connectors[1].tx_id is None
        if version == "1.6":
            assert 14.0 < model.connectors[1].energy_wh / (0.5 * 230 * 3) <= 16.5  # the 16 A profile, not 32 A
        await csms.firmware_update("CP07", "1.6.0")
        deadline = asyncio.get_running_loop().time() + 5
        while model.firmware_version != "1.6.0":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert "FirmwareUpdated" in csms.views["CP07"].security_events
        with pytest.raises(CsmsError):
            await csms.send("CP07", "NoSuchAction")
    finally:
        session.stop()
        await asyncio.wait_for(task, 5)
        await csms.close()
