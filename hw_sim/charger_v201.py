"""The simulated charger's OCPP 2.0.1 face (one connector per EVSE: evse_id == connector id)."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from .charger import ChargerModel, Event
from .charger_v16 import iso

# (component, variable) -> the model's configuration key
VARIABLE_KEYS: dict[tuple[str, str], str] = {
    ("OCPPCommCtrlr", "HeartbeatInterval"): "HeartbeatInterval",
    ("SampledDataCtrlr", "TxUpdatedInterval"): "MeterValueSampleInterval",
    ("SecurityCtrlr", "SecurityProfile"): "SecurityProfile",
    ("SecurityCtrlr", "BasicAuthPassword"): "BasicAuthPassword",
    ("AuthCtrlr", "AuthorizeRemoteStart"): "AuthorizeRemoteTxRequests",
    ("AuthCtrlr", "OfflineTxForUnknownIdEnabled"): "AllowOfflineTxForUnknownId",
    ("AuthCtrlr", "LocalAuthorizeOffline"): "LocalAuthorizeOffline",
    ("LocalAuthListCtrlr", "Enabled"): "LocalAuthListEnabled",
    ("TxCtrlr", "EVConnectionTimeOut"): "ConnectionTimeOut",
}
_STOP_REASONS = {"EVDisconnected": "EVDisconnected", "Remote": "Remote", "UnlockCommand": "Other",
                 "HardReset": "ImmediateReset", "Local": "Local"}


class Charger201(ChargePoint):
    def __init__(self, id: str, connection: Any, *, model: ChargerModel, session: Any,
                 response_timeout: float = 10) -> None:
        super().__init__(id, connection, response_timeout=response_timeout)
        self.model, self.session = model, session
        self._seq = 0
        self.registration: str | None = None

    def _now(self) -> str:
        return iso(self.session.clock.now_ms())

    async def route_message(self, raw_msg: str) -> None:
        self.session.twin.publish()
        await super().route_message(raw_msg)

    # -- charger → CSMS ------------------------------------------------------------------
    async def send_boot(self) -> None:
        m = self.model
        res = await self.call(call.BootNotification(
            charging_station={"model": m.config.model, "vendor_name": m.config.vendor,
                              "firmware_version": m.firmware_version, "serial_number": f"SN-{m.id}"},
            reason="PowerUp" if m.boots <= 1 else "RemoteReset"))
        self.registration = getattr(res, "status", None)
        interval = getattr(res, "interval", None)
        if interval:
            m.configuration["HeartbeatInterval"] = str(interval)

    async def send_heartbeat(self) -> None:
        await self.call(call.Heartbeat())

    async def _tx_event(self, event_type: str, trigger: str, d: dict, **extra: Any) -> None:
        self._seq += 1
        await self.call(call.TransactionEvent(
            event_type=event_type, timestamp=self._now(), trigger_reason=trigger, seq_no=self._seq,
            transaction_info={"transaction_id": str(d["tx_id"]), **extra.pop("info", {})},
            evse={"id": d["connector_id"], "connector_id": 1}, **extra))

    async def send_event(self, ev: Event) -> None:
        d, now = ev.data, self._now()
        if ev.kind == "status":
            status = {"Preparing": "Occupied", "Charging": "Occupied", "SuspendedEV": "Occupied",
                      "SuspendedEVSE": "Occupied", "Finishing": "Occupied"}.get(d["status"], d["status"])
            await self.call(call.StatusNotification(timestamp=now, connector_status=status,
                                                    evse_id=d["connector_id"], connector_id=1))
        elif ev.kind == "tx_started":
            await self._tx_event("Started", "RemoteStart", d, id_token={"id_token": d["id_tag"], "type": "Central"},
                                 info={"charging_state": "EVConnected"})
        elif ev.kind == "tx_stopped":
            await self._tx_event("Ended", "StopAuthorized" if d["reason"] == "Remote" else "EVDeparted", d,
                                 info={"stopped_reason": _STOP_REASONS.get(d["reason"], "Other")})
        elif ev.kind == "meter":
            value = [{"timestamp": now, "sampled_value": [
                {"value": d["energy_wh"], "measurand": "Energy.Active.Import.Register"},
                {"value": d["current_a"], "measurand": "Current.Import"}]}]
            await self._tx_event("Updated", "MeterValuePeriodic", d, meter_value=value)
        elif ev.kind == "security":
            await self.call(call.SecurityEventNotification(type=d["type"], timestamp=now,
                                                           tech_info=d.get("info") or None))
        elif ev.kind == "firmware":
            status = {"Idle": "Idle"}.get(d["status"], d["status"])
            await self.call(call.FirmwareStatusNotification(status=status))

    # -- CSMS → charger ------------------------------------------------------------------
    @on(Action.request_start_transaction)
    def on_request_start(self, id_token: dict, remote_start_id: int, evse_id: int | None = None,
                         charging_profile: dict | None = None, **_: Any) -> call_result.RequestStartTransaction:
        cid = self.model.can_start(evse_id)
        if cid is None:
            return call_result.RequestStartTransaction(status="Rejected")
        tx = self.model.start_transaction(cid, id_token.get("id_token", ""))
        if charging_profile:
            self._apply_profile(cid, charging_profile)
        return call_result.RequestStartTransaction(status="Accepted", transaction_id=str(tx))

    @on(Action.request_stop_transaction)
    def on_request_stop(self, transaction_id: str, **_: Any) -> call_result.RequestStopTransaction:
        ok = transaction_id.isdigit() and self.model.stop_transaction(int(transaction_id), reason="Remote")
        return call_result.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.unlock_connector)
    def on_unlock(self, evse_id: int, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        if evse_id not in self.model.connectors:
            return call_result.UnlockConnector(status="UnknownConnector")
        return call_result.UnlockConnector(status=self.model.unlock(evse_id))

    @on(Action.reset)
    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> call_result.Reset:
        return call_result.Reset(status=self.model.reset(type))

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list, **_: Any) -> call_result.SetVariables:
        results = []
        for item in set_variable_data:
            comp, var = item["component"]["name"], item["variable"]["name"]
            key = VARIABLE_KEYS.get((comp, var))
            status = "UnknownVariable" if key is None else self.model.change_configuration(key, str(item["attribute_value"]))
            status = {"NotSupported": "UnknownVariable"}.get(status, status)
            results.append({"attribute_status": status, "component": item["component"], "variable": item["variable"]})
        return call_result.SetVariables(set_variable_result=results)

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list, **_: Any) -> call_result.GetVariables:
        results = []
        for item in get_variable_data:
            key = VARIABLE_KEYS.get((item["component"]["name"], item["variable"]["name"]))
            entry = {"component": item["component"], "variable": item["variable"]}
            if key is None or key not in self.model.configuration:
                entry["attribute_status"] = "UnknownVariable"
            else:
                entry.update(attribute_status="Accepted", attribute_value=self.model.configuration[key])
            results.append(entry)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.get_base_report)
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> call_result.GetBaseReport:
        return call_result.GetBaseReport(status="Accepted")

    @on(Action.set_network_profile)
    def on_set_network_profile(self, configuration_slot: int, connection_data: dict, **_: Any) -> call_result.SetNetworkProfile:
        profile = int(connection_data.get("security_profile", 0))
        if profile < self.model.security_profile:
            return call_result.SetNetworkProfile(status="Rejected")
        self.model.security_event("ReconfigurationOfSecurityParameters", "NetworkProfile")
        return call_result.SetNetworkProfile(status="Accepted")

    @on(Action.update_firmware)
    def on_update_firmware(self, request_id: int, firmware: dict, **_: Any) -> call_result.UpdateFirmware:
        loc = firmware.get("location", "")
        version = loc.rstrip("/").rsplit("/", 1)[-1].removesuffix(".bin").split("-")[-1]
        self.model.schedule_firmware(loc, version if version[:1].isdigit() else None,
                                     signed=bool(firmware.get("signature")))
        return call_result.UpdateFirmware(status="Accepted")

    @on(Action.get_log)
    def on_get_log(self, log: dict, log_type: str, request_id: int, **_: Any) -> call_result.GetLog:
        return call_result.GetLog(status="Accepted", filename=f"{log_type.lower()}-{self.model.id}.log")

    def _apply_profile(self, evse_id: int, profile: dict) -> None:
        schedules = profile.get("charging_schedule") or []
        periods = (schedules[0] if schedules else {}).get("charging_schedule_period") or []
        if periods:
            self.model.set_limit(evse_id, float(periods[0].get("limit", 0)))

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict, **_: Any) -> call_result.SetChargingProfile:
        self._apply_profile(evse_id, charging_profile)
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, **_: Any) -> call_result.ClearChargingProfile:
        self.model.set_limit(0, None)
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.change_availability)
    def on_change_availability(self, operational_status: str, evse: dict | None = None, **_: Any) -> call_result.ChangeAvailability:
        cid = (evse or {}).get("id", 0)
        if cid and cid not in self.model.connectors:
            return call_result.ChangeAvailability(status="Rejected")
        return call_result.ChangeAvailability(status=self.model.availability(cid, operational_status == "Operative"))

    @on(Action.reserve_now)
    def on_reserve_now(self, id: int, expiry_date_time: str, id_token: dict, evse_id: int | None = None,
                       **_: Any) -> call_result.ReserveNow:
        c = self.model.connectors.get(evse_id or 1)
        if c is None or c.tx_id is not None or c.status != "Available":
            return call_result.ReserveNow(status="Occupied" if c else "Rejected")
        c.reserved_for = id_token.get("id_token")
        self.model._set_status(c, "Reserved")
        return call_result.ReserveNow(status="Accepted")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, evse: dict | None = None, **_: Any) -> call_result.TriggerMessage:
        if requested_message == "MeterValues":
            for c in self.model.connectors.values():
                if c.tx_id is not None:
                    self.model.meter_sample(c.id)
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        status = "Accepted" if vendor_id == self.model.config.vendor else "UnknownVendorId"
        return call_result.DataTransfer(status=status)

    @on(Action.send_local_list)
    def on_send_local_list(self, version_number: int, update_type: str, local_authorization_list: list | None = None,
                           **_: Any) -> call_result.SendLocalList:
        entries = {e["id_token"]["id_token"]: "Accepted" for e in (local_authorization_list or [])}
        return call_result.SendLocalList(status=self.model.send_local_list(entries, version_number, update_type == "Full"))

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        return call_result.ClearCache(status="Accepted")

    @on(Action.install_certificate)
    def on_install_certificate(self, certificate_type: str, certificate: str, **_: Any) -> call_result.InstallCertificate:
        return call_result.InstallCertificate(status="Accepted")

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict, **_: Any) -> call_result.DeleteCertificate:
        return call_result.DeleteCertificate(status="Accepted")

    @on(Action.set_display_message)
    def on_set_display_message(self, message: dict, **_: Any) -> call_result.SetDisplayMessage:
        return call_result.SetDisplayMessage(status="Accepted")

    @on(Action.customer_information)
    def on_customer_information(self, request_id: int, report: bool, clear: bool, **_: Any) -> call_result.CustomerInformation:
        return call_result.CustomerInformation(status="Accepted")

    @on(Action.set_monitoring_level)
    def on_set_monitoring_level(self, severity: int, **_: Any) -> call_result.SetMonitoringLevel:
        return call_result.SetMonitoringLevel(status="Accepted")
