"""The simulated charger's OCPP 1.6J face: handlers for CSMS commands, senders for model events.

Handlers only act on the model: recording and judging are the shim guard's job, which
wraps this ChargePoint (``charger_run.apply_guard``) before any CALL is served.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from .charger import ChargerModel, Event


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


class Charger16(ChargePoint):
    def __init__(self, id: str, connection: Any, *, model: ChargerModel, session: Any,
                 response_timeout: float = 10) -> None:
        super().__init__(id, connection, response_timeout=response_timeout)
        self.model, self.session = model, session
        self.heartbeat_interval_s: int | None = None
        self.registration: str | None = None

    def _now(self) -> str:
        return iso(self.session.clock.now_ms())

    async def route_message(self, raw_msg: str) -> None:
        # fresh readings before any command is judged (a stale safety value counts as unsafe)
        self.session.twin.publish()
        await super().route_message(raw_msg)

    # -- charger → CSMS ------------------------------------------------------------------
    async def send_boot(self) -> None:
        m = self.model
        res = await self.call(call.BootNotification(
            charge_point_model=m.config.model, charge_point_vendor=m.config.vendor,
            firmware_version=m.firmware_version, charge_point_serial_number=f"SN-{m.id}"))
        self.registration = getattr(res, "status", None)
        self.heartbeat_interval_s = getattr(res, "interval", None)
        if self.heartbeat_interval_s:
            m.configuration["HeartbeatInterval"] = str(self.heartbeat_interval_s)

    async def send_heartbeat(self) -> None:
        await self.call(call.Heartbeat())

    async def send_event(self, ev: Event) -> None:
        d, now = ev.data, self._now()
        if ev.kind == "status":
            await self.call(call.StatusNotification(connector_id=d["connector_id"], error_code="NoError",
                                                    status=d["status"], timestamp=now))
        elif ev.kind == "tx_started":
            res = await self.call(call.StartTransaction(connector_id=d["connector_id"], id_tag=d["id_tag"],
                                                        meter_start=d["meter_start_wh"], timestamp=now))
            csms_tx = getattr(res, "transaction_id", None)
            c = self.model.connectors[d["connector_id"]]
            if csms_tx is not None and c.tx_id == d["tx_id"]:
                c.tx_id = int(csms_tx)   # 1.6: the CSMS assigns the transaction id
        elif ev.kind == "tx_stopped":
            await self.call(call.StopTransaction(meter_stop=d["meter_stop_wh"], timestamp=now,
                                                 transaction_id=d["tx_id"], reason=d["reason"]))
        elif ev.kind == "meter":
            value = [{"timestamp": now, "sampledValue": [
                {"value": str(d["energy_wh"]), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": str(d["current_a"]), "measurand": "Current.Import", "unit": "A"}]}]
            await self.call(call.MeterValues(connector_id=d["connector_id"], meter_value=value,
                                             transaction_id=d["tx_id"]))
        elif ev.kind == "security":
            await self.call(call.SecurityEventNotification(type=d["type"], timestamp=now,
                                                           tech_info=d.get("info") or None))
        elif ev.kind == "firmware":
            status = d["status"] if d["status"] != "Idle" else "Idle"
            await self.call(call.FirmwareStatusNotification(status=status))
        # "boot" events are covered by send_boot

    # -- CSMS → charger ------------------------------------------------------------------
    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None, charging_profile: Any = None,
                        **_: Any) -> call_result.RemoteStartTransaction:
        cid = self.model.can_start(connector_id)
        if cid is None:
            return call_result.RemoteStartTransaction(status="Rejected")
        self.model.start_transaction(cid, id_tag)
        if charging_profile:
            self._apply_profile(cid, charging_profile)
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int, **_: Any) -> call_result.RemoteStopTransaction:
        ok = self.model.stop_transaction(transaction_id, reason="Remote")
        return call_result.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.unlock_connector)
    def on_unlock(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        if connector_id not in self.model.connectors:
            return call_result.UnlockConnector(status="NotSupported")
        status = self.model.unlock(connector_id)
        # 1.6J has no OngoingAuthorizedTransaction: a refusal during energy transfer is UnlockFailed
        return call_result.UnlockConnector(status="Unlocked" if status == "Unlocked" else "UnlockFailed")

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        status = self.model.reset(type)
        return call_result.Reset(status="Accepted" if status in ("Accepted", "Scheduled") else "Rejected")

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(status=self.model.change_configuration(key, value))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> call_result.GetConfiguration:
        conf = self.model.configuration
        keys = key or list(conf)
        known = [{"key": k, "readonly": k == "SecurityProfile", "value": conf[k]} for k in keys if k in conf]
        unknown = [k for k in keys if k not in conf]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.update_firmware)
    def on_update_firmware(self, location: str, retrieve_date: str, **_: Any) -> call_result.UpdateFirmware:
        version = location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".bin").split("-")[-1]
        self.model.schedule_firmware(location, version if version[:1].isdigit() else None, signed=False)
        return call_result.UpdateFirmware()

    @on(Action.signed_update_firmware)
    def on_signed_update_firmware(self, request_id: int, firmware: dict, **_: Any) -> call_result.SignedUpdateFirmware:
        loc = firmware.get("location", "")
        version = loc.rstrip("/").rsplit("/", 1)[-1].removesuffix(".bin").split("-")[-1]
        self.model.schedule_firmware(loc, version if version[:1].isdigit() else None, signed=True)
        return call_result.SignedUpdateFirmware(status="Accepted")

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **_: Any) -> call_result.GetDiagnostics:
        return call_result.GetDiagnostics(file_name=f"diag-{self.model.id}.tar.gz")

    @on(Action.get_log)
    def on_get_log(self, log: dict, log_type: str, request_id: int, **_: Any) -> call_result.GetLog:
        return call_result.GetLog(status="Accepted", filename=f"{log_type.lower()}-{self.model.id}.log")

    def _apply_profile(self, connector_id: int, profile: dict) -> None:
        periods = (profile.get("charging_schedule") or {}).get("charging_schedule_period") or []
        if periods:
            self.model.set_limit(connector_id, float(periods[0].get("limit", 0)))

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict, **_: Any) -> call_result.SetChargingProfile:
        self._apply_profile(connector_id, cs_charging_profiles)
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, connector_id: int | None = None, **_: Any) -> call_result.ClearChargingProfile:
        self.model.set_limit(connector_id or 0, None)
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str, **_: Any) -> call_result.ChangeAvailability:
        if connector_id and connector_id not in self.model.connectors:
            return call_result.ChangeAvailability(status="Rejected")
        return call_result.ChangeAvailability(status=self.model.availability(connector_id, type == "Operative"))

    @on(Action.reserve_now)
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                       **_: Any) -> call_result.ReserveNow:
        c = self.model.connectors.get(connector_id)
        if c is None or c.tx_id is not None or c.status != "Available":
            return call_result.ReserveNow(status="Occupied" if c else "Rejected")
        c.reserved_for = id_tag
        self.model._set_status(c, "Reserved")
        return call_result.ReserveNow(status="Accepted")

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        return call_result.CancelReservation(status="Accepted")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any) -> call_result.TriggerMessage:
        if requested_message == "MeterValues":
            for c in self.model.connectors.values():
                if connector_id in (None, c.id):
                    self.model.meter_sample(c.id)
        elif requested_message == "StatusNotification":
            for c in self.model.connectors.values():
                self.model._emit("status", connector_id=c.id, status=c.status)
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.extended_trigger_message)
    def on_extended_trigger(self, requested_message: str, **_: Any) -> call_result.ExtendedTriggerMessage:
        return call_result.ExtendedTriggerMessage(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None,
                         **_: Any) -> call_result.DataTransfer:
        if vendor_id != self.model.config.vendor:
            return call_result.DataTransfer(status="UnknownVendorId")
        return call_result.DataTransfer(status="Accepted")

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, update_type: str, local_authorization_list: list | None = None,
                           **_: Any) -> call_result.SendLocalList:
        entries = {e["id_tag"]: (e.get("id_tag_info") or {}).get("status", "Accepted")
                   for e in (local_authorization_list or [])}
        status = self.model.send_local_list(entries, list_version, update_type == "Full")
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(list_version=self.model.local_list_version)

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        return call_result.ClearCache(status="Accepted")

    @on(Action.install_certificate)
    def on_install_certificate(self, certificate_type: str, certificate: str, **_: Any) -> call_result.InstallCertificate:
        return call_result.InstallCertificate(status="Accepted")

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict, **_: Any) -> call_result.DeleteCertificate:
        return call_result.DeleteCertificate(status="Accepted")

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(self, certificate_type: str, **_: Any) -> call_result.GetInstalledCertificateIds:
        return call_result.GetInstalledCertificateIds(status="NotFound")

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str, **_: Any) -> call_result.CertificateSigned:
        return call_result.CertificateSigned(status="Accepted")
