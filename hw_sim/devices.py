"""Running devices: a model plus its loops, wired to a link (the agent) and a clock.

``SimVehicle``: the vehicle model, a physics loop (move, charge, publish the twin), and the
backends that talk to it (the owner's app with a paired virtual key, the OEM cloud, a
dealer portal). ``SimCharger``: the charger model and its OCPP session to a CSMS. Both
offer ``run()`` for the owning TaskGroup and ``stop()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .backends import Backend, Principal, dealer_portal, oem_cloud, owner_app
from .charger import ChargerConfig, ChargerModel
from .charger_run import ChargerSession, SessionConfig
from .clock import Clock
from .csms import Csms
from .link import DeviceLink
from .vehicle import VehicleConfig, VehicleModel


class SimVehicle:
    def __init__(self, config: VehicleConfig, link: DeviceLink, clock: Clock, *, seed: int = 0,
                 tick_s: float = 10.0) -> None:
        self.clock = clock
        self.model = VehicleModel(config, link=link)
        self.tick_s = tick_s
        self.app: Backend = owner_app(clock, seed)
        self.oem: Backend = oem_cloud(clock, seed + 1)
        self.dealer: Backend = dealer_portal(clock, seed + 2)
        self.owner: Principal = self.app.principal(f"owner-{config.vin[-6:]}", "owner", signing=True,
                                                   token_age_s=600)
        self.app.enroll_key(self.owner, self.model)
        self.service: Principal = self.oem.principal("oem-telematics", "provider", token_age_s=300)
        self.technician: Principal = self.dealer.principal("dealer-0815", "dealer", token_age_s=300,
                                                           scopes=("read:Vehicle", "actuate:Vehicle.Body"))
        self._stop = asyncio.Event()

    @property
    def vin(self) -> str:
        return self.model.vin

    def backend(self, name: str) -> tuple[Backend, Principal]:
        if name == "app":
            return self.app, self.owner
        if name == "oem":
            return self.oem, self.service
        if name == "dealer":
            return self.dealer, self.technician
        raise KeyError(f"unknown backend {name!r} (app, oem, dealer)")

    async def command(self, backend: str, name: str, **args: Any) -> Any:
        b, p = self.backend(backend)
        return await b.send(self.model, p, name, fresh_token=True, **args)   # apps refresh short-lived tokens

    async def drive_until_arrived(self, to: str, kmh: float) -> None:
        self.model.drive_to(to, kmh)
        while not self.model.arrived:
            await self.clock.sleep(self.tick_s)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.model.publish()
        last = self.clock.mono_ms()
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.tick_s / self.clock.factor)
            except asyncio.TimeoutError:
                pass
            now = self.clock.mono_ms()
            self.model.tick((now - last) / 1000)
            last = now


class SimCharger:
    def __init__(self, config: ChargerConfig, link: DeviceLink, clock: Clock, csms: Csms, *,
                 ocpp_version: str = "1.6", physics_interval_s: float = 10.0, connect_attempts: int = 1) -> None:
        self.clock, self.csms = clock, csms
        self.model = ChargerModel(config)
        self.session = ChargerSession(self.model, link, clock, SessionConfig(
            csms_url=csms.url(config.charger_id), ocpp_version=ocpp_version,
            physics_interval_s=physics_interval_s, connect_attempts=connect_attempts))

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def version(self) -> str:
        return self.session.config.ocpp_version

    def stop(self) -> None:
        self.session.stop()

    async def run(self) -> None:
        await self.session.run()

    async def ready(self, timeout_s: float = 10.0) -> None:
        await self.csms.wait_connected(self.id, timeout_s)

    def tx_of(self, connector: int) -> int | None:
        return self.model.connectors[connector].tx_id

    async def remote_start(self, connector: int, id_tag: str) -> Any:
        if self.version == "2.0.1":
            return await self.csms.send(self.id, "RequestStartTransaction", remote_start_id=connector,
                                        id_token={"id_token": id_tag, "type": "Central"}, evse_id=connector)
        return await self.csms.send(self.id, "RemoteStartTransaction", id_tag=id_tag, connector_id=connector)

    async def remote_stop(self, connector: int) -> Any:
        tx = self.tx_of(connector)
        if tx is None:
            return None
        if self.version == "2.0.1":
            return await self.csms.send(self.id, "RequestStopTransaction", transaction_id=str(tx))
        return await self.csms.send(self.id, "RemoteStopTransaction", transaction_id=tx)

    async def set_limit(self, connector: int, amps: float) -> Any:
        schedule = {"charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": amps}]}
        if self.version == "2.0.1":
            return await self.csms.send(self.id, "SetChargingProfile", evse_id=connector, charging_profile={
                "id": 7, "stack_level": 1, "charging_profile_purpose": "TxDefaultProfile",
                "charging_profile_kind": "Absolute", "charging_schedule": [{"id": 1, **schedule}]})
        return await self.csms.send(self.id, "SetChargingProfile", connector_id=connector, cs_charging_profiles={
            "charging_profile_id": 7, "stack_level": 1, "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute", "charging_schedule": schedule})

    async def clear_limit(self) -> Any:
        if self.version == "2.0.1":
            return await self.csms.send(self.id, "ClearChargingProfile", charging_profile_id=7)
        return await self.csms.send(self.id, "ClearChargingProfile", id=7)

    async def reset(self, kind: str) -> Any:
        if self.version == "2.0.1":
            kind = {"Soft": "OnIdle", "Hard": "Immediate"}.get(kind, kind)
        return await self.csms.send(self.id, "Reset", type=kind)

    async def read_config(self) -> Any:
        if self.version == "2.0.1":
            return await self.csms.send(self.id, "GetVariables", get_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}])
        return await self.csms.send(self.id, "GetConfiguration", key=["HeartbeatInterval"])
