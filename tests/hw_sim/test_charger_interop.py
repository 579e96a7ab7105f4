"""The simulated charger against an independent CSMS written here with the `ocpp` package.

Covers boot, heartbeat, status, remote start/stop, unlock, reset and firmware update, for
OCPP 1.6J and 2.0.1, over real websockets on a free port. No agent: a RecordingLink.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16, call as c16, call_result as r16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as CP201, call as c201, call_result as r201
from ocpp.v201.enums import Action as A201

from hw_sim.charger import ChargerConfig, ChargerModel
from hw_sim.charger_run import ChargerSession, SessionConfig
from hw_sim.clock import ClockConfig, SimClock
from hw_sim.link import RecordingLink


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Csms16(CP16):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen: list[tuple[str, dict]] = []
        self.booted = asyncio.Event()
        self.next_tx = 77

    def _log(self, action, **kw):
        self.seen.append((action, kw))

    @on(A16.boot_notification)
    def boot(self, **kw):
        self._log("BootNotification", **kw)
        self.booted.set()
        return r16.BootNotification(current_time=_now(), interval=30, status="Accepted")

    @on(A16.heartbeat)
    def hb(self, **kw):
        self._log("Heartbeat")
        return r16.Heartbeat(current_time=_now())

    @on(A16.status_notification)
    def status(self, **kw):
        self._log("StatusNotification", **kw)
        return r16.StatusNotification()

    @on(A16.start_transaction)
    def start_tx(self, **kw):
        self._log("StartTransaction", **kw)
        self.next_tx += 1
        return r16.StartTransaction(transaction_id=self.next_tx, id_tag_info={"status": "Accepted"})

    @on(A16.stop_transaction)
    def stop_tx(self, **kw):
        self._log("StopTransaction", **kw)
        return r16.StopTransaction()

    @on(A16.meter_values)
    def meter(self, **kw):
        self._log("MeterValues", **kw)
        return r16.MeterValues()

    @on(A16.security_event_notification)
    def sec(self, **kw):
        self._log("SecurityEventNotification", **kw)
        return r16.SecurityEventNotification()

    @on(A16.firmware_status_notification)
    def fw(self, **kw):
        self._log("FirmwareStatusNotification", **kw)
        return r16.FirmwareStatusNotification()


class Csms201(CP201):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen: list[tuple[str, dict]] = []
        self.booted = asyncio.Event()

    @on(A201.boot_notification)
    def boot(self, **kw):
        self.seen.append(("BootNotification", kw))
        self.booted.set()
        return r201.BootNotification(current_time=_now(), interval=30, status="Accepted")

    @on(A201.heartbeat)
    def hb(self, **kw):
        self.seen.append(("Heartbeat", kw))
        return r201.Heartbeat(current_time=_now())

    @on(A201.status_notification)
    def status(self, **kw):
        self.seen.append(("StatusNotification", kw))
        return r201.StatusNotification()

    @on(A201.transaction_event)
    def tx(self, **kw):
        self.seen.append(("TransactionEvent", kw))
        return r201.TransactionEvent()

    @on(A201.security_event_notification)
    def sec(self, **kw):
        self.seen.append(("SecurityEventNotification", kw))
        return r201.SecurityEventNotification()

    @on(A201.firmware_status_notification)
    def fw(self, **kw):
        self.seen.append(("FirmwareStatusNotification", kw))
        return r201.FirmwareStatusNotification()


async def wait_for(predicate, timeout_s=10.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def _serve(cls, subprotocol):
    holder: dict = {}

    async def handler(ws):
        cp = cls(ws.request.path.strip("/"), ws)
        holder["cp"] = cp
        try:
            await cp.start()
        except websockets.exceptions.ConnectionClosed:
            pass

    server = await websockets.serve(handler, "127.0.0.1", 0, subprotocols=[subprotocol])
    port = server.sockets[0].getsockname()[1]
    return server, port, holder


def _names(seen):
    return [a for a, _ in seen]


async def test_ocpp16_interop_boot_status_tx_unlock_reset_firmware():
    server, port, holder = await _serve(Csms16, "ocpp1.6")
    model = ChargerModel(ChargerConfig(charger_id="CP01", connectors=2))
    clock = SimClock(ClockConfig(factor=600.0))
    link = RecordingLink()
    session = ChargerSession(model, link, clock, SessionConfig(
        csms_url=f"ws://127.0.0.1:{port}/CP01", ocpp_version="1.6", physics_interval_s=5, meter_interval_s=10))
    task = asyncio.create_task(session.run())
    try:
        await wait_for(lambda: "cp" in holder and holder["cp"].booted.is_set())
        csms = holder["cp"]
        boot = dict(csms.seen)["BootNotification"]
        assert boot["charge_point_vendor"] == "Veritrail-Sim" and boot["firmware_version"] == "1.4.2"
        await wait_for(lambda: "Heartbeat" in _names(csms.seen))   # interval 30 s sim = 50 ms real
        await wait_for(lambda: sum(1 for a, k in csms.seen if a == "StatusNotification") >= 2)

        model.plug_in(1, ev_demand_a=32)
        res = await csms.call(c16.RemoteStartTransaction(id_tag="TAG-1", connector_id=1))
        assert res.status == "Accepted"
        await wait_for(lambda: "StartTransaction" in _names(csms.seen))
        await wait_for(lambda: model.connectors[1].tx_id == 78)  # id assigned by this CSMS
        await wait_for(lambda: "MeterValues" in _names(csms.seen))
        assert model.connectors[1].status == "Charging" and model.connectors[1].current_a == 32

        # unlock during energy transfer: refused by the charger itself
        res = await csms.call(c16.UnlockConnector(connector_id=1))
        assert res.status == "UnlockFailed"
        assert model.connectors[1].cable_locked

        res = await csms.call(c16.RemoteStopTransaction(transaction_id=78))
        assert res.status == "Accepted"
        await wait_for(lambda: "StopTransaction" in _names(csms.seen))
        stop = dict(csms.seen)["StopTransaction"]
        assert stop["transaction_id"] == 78 and stop["meter_stop"] > 0
        res = await csms.call(c16.UnlockConnector(connector_id=1))
        assert res.status == "Unlocked" and not model.connectors[1].cable_locked

        res = await csms.call(c16.UpdateFirmware(location="https://fw.vendor.example/vs22-1.5.0.bin",
                                                 retrieve_date=_now()))
        await wait_for(lambda: model.firmware_version == "1.5.0")
        fw = lambda: [k["status"] for a, k in csms.seen if a == "FirmwareStatusNotification"]  # noqa: E731
        await wait_for(lambda: "Installed" in fw())
        assert fw()[:4] == ["Downloading", "Downloaded", "Installing", "Installed"]

        boots = _names(csms.seen).count("BootNotification")
        res = await csms.call(c16.Reset(type="Soft"))
        assert res.status == "Accepted"
        await wait_for(lambda: any(a == "SecurityEventNotification" and k["type"] == "ResetOrReboot"
                                   for a, k in csms.seen))
        assert model.boots == boots + 1
        # every state change reached the twin the agent would see
        assert link.state["firmware.version"] == "1.5.0" and link.state["tx.active"] is False
    finally:
        session.stop()
        await asyncio.wait_for(task, 5)
        server.close()


async def test_ocpp201_interop_boot_status_tx_unlock_reset_firmware():
    server, port, holder = await _serve(Csms201, "ocpp2.0.1")
    model = ChargerModel(ChargerConfig(charger_id="CP02", connectors=1))
    clock = SimClock(ClockConfig(factor=600.0))
    session = ChargerSession(model, RecordingLink(), clock, SessionConfig(
        csms_url=f"ws://127.0.0.1:{port}/CP02", ocpp_version="2.0.1", physics_interval_s=5, meter_interval_s=10))
    task = asyncio.create_task(session.run())
    try:
        await wait_for(lambda: "cp" in holder and holder["cp"].booted.is_set())
        csms = holder["cp"]
        assert dict(csms.seen)["BootNotification"]["charging_station"]["vendor_name"] == "Veritrail-Sim"
        await wait_for(lambda: "Heartbeat" in _names(csms.seen))
        model.plug_in(1, ev_demand_a=16)
        res = await csms.call(c201.RequestStartTransaction(id_token={"id_token": "TOK", "type": "Central"},
                                                           remote_start_id=5, evse_id=1))
        assert res.status == "Accepted" and res.transaction_id
        tx_id = res.transaction_id
        await wait_for(lambda: any(a == "TransactionEvent" and k["event_type"] == "Started" for a, k in csms.seen))
        await wait_for(lambda: model.connectors[1].current_a == 16)
        res = await csms.call(c201.UnlockConnector(evse_id=1, connector_id=1))
        assert res.status == "OngoingAuthorizedTransaction"
        res = await csms.call(c201.RequestStopTransaction(transaction_id=tx_id))
        assert res.status == "Accepted"
        await wait_for(lambda: any(a == "TransactionEvent" and k["event_type"] == "Ended" for a, k in csms.seen))
        res = await csms.call(c201.UnlockConnector(evse_id=1, connector_id=1))
        assert res.status == "Unlocked"
        res = await csms.call(c201.UpdateFirmware(request_id=1, firmware={
            "location": "https://fw.vendor.example/vs22-2.0.0.bin", "retrieve_date_time": _now(),
            "signature": "c2ln", "signing_certificate": "cert"}))
        assert res.status == "Accepted"
        await wait_for(lambda: model.firmware_version == "2.0.0")
        res = await csms.call(c201.Reset(type="Immediate"))
        assert res.status == "Accepted"
        await wait_for(lambda: any(a == "SecurityEventNotification" and k["type"] == "StartupOfTheDevice"
                                   for a, k in csms.seen))
        res = await csms.call(c201.SetVariables(set_variable_data=[{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"},
            "attribute_value": "1"}]))
        assert res.set_variable_result[0]["attribute_status"] == "Rejected"   # never downgrade
    finally:
        session.stop()
        await asyncio.wait_for(task, 5)
        server.close()
