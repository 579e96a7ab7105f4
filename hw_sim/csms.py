"""A simulated CSMS (OCPP 1.6J and 2.0.1, with the `ocpp` package) that chargers connect to.

It answers what chargers send (boot, heartbeat, status, transactions, meter values,
security and firmware notifications, keeping a per-charger view) and lets a script send
any CSMS→charger command: ``await csms.send("CP01", "UnlockConnector", connector_id=1)``,
by OCPP action name with snake_case fields, for either version. ``benign_day_ops`` runs
the operations a well-behaved operator does (remote start with a charging profile, stop,
configuration reads, firmware from the vendor host); attack scenarios use the same
``send`` (plus ``send_raw`` to repeat a message id, as a replaying attacker would).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16, call as call16, call_result as res16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as CP201, call as call201, call_result as res201
from ocpp.v201.enums import Action as A201

from .clock import Clock

log = logging.getLogger("hw_sim.csms")
VENDOR_FIRMWARE_HOST = "https://fw.veritrail-sim.example"


class CsmsError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class ChargerView:
    id: str
    version: str
    boots: int = 0
    heartbeats: int = 0
    status: dict[int, str] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)   # open tx id -> info
    security_events: list[str] = field(default_factory=list)
    firmware: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


class _Handlers16(CP16):
    csms: "Csms"
    view: ChargerView

    def _seen(self, action: str) -> None:
        self.view.received.append(action)

    @on(A16.boot_notification)
    def _boot(self, **kw: Any) -> Any:
        self._seen("BootNotification")
        self.view.boots += 1
        return res16.BootNotification(current_time=self.csms.now(), interval=self.csms.heartbeat_s, status="Accepted")

    @on(A16.heartbeat)
    def _hb(self, **kw: Any) -> Any:
        self._seen("Heartbeat")
        self.view.heartbeats += 1
        return res16.Heartbeat(current_time=self.csms.now())

    @on(A16.status_notification)
    def _status(self, connector_id: int, status: str, **kw: Any) -> Any:
        self._seen("StatusNotification")
        self.view.status[connector_id] = status
        return res16.StatusNotification()

    @on(A16.authorize)
    def _authorize(self, id_tag: str, **kw: Any) -> Any:
        self._seen("Authorize")
        return res16.Authorize(id_tag_info={"status": "Accepted"})

    @on(A16.start_transaction)
    def _start(self, connector_id: int, id_tag: str, meter_start: int, **kw: Any) -> Any:
        self._seen("StartTransaction")
        tx = self.csms.next_tx_id()
        self.view.transactions[str(tx)] = {"connector": connector_id, "id_tag": id_tag, "meter_start": meter_start}
        return res16.StartTransaction(transaction_id=tx, id_tag_info={"status": "Accepted"})

    @on(A16.stop_transaction)
    def _stop(self, transaction_id: int, **kw: Any) -> Any:
        self._seen("StopTransaction")
        self.view.transactions.pop(str(transaction_id), None)
        return res16.StopTransaction()

    @on(A16.meter_values)
    def _meter(self, **kw: Any) -> Any:
        self._seen("MeterValues")
        return res16.MeterValues()

    @on(A16.security_event_notification)
    def _sec(self, type: str, **kw: Any) -> Any:
        self._seen("SecurityEventNotification")
        self.view.security_events.append(type)
        return res16.SecurityEventNotification()

    @on(A16.firmware_status_notification)
    def _fw(self, status: str, **kw: Any) -> Any:
        self._seen("FirmwareStatusNotification")
        self.view.firmware.append(status)
        return res16.FirmwareStatusNotification()

    @on(A16.diagnostics_status_notification)
    def _diag(self, **kw: Any) -> Any:
        return res16.DiagnosticsStatusNotification()


class _Handlers201(CP201):
    csms: "Csms"
    view: ChargerView

    def _seen(self, action: str) -> None:
        self.view.received.append(action)

    @on(A201.boot_notification)
    def _boot(self, **kw: Any) -> Any:
        self._seen("BootNotification")
        self.view.boots += 1
        return res201.BootNotification(current_time=self.csms.now(), interval=self.csms.heartbeat_s, status="Accepted")

    @on(A201.heartbeat)
    def _hb(self, **kw: Any) -> Any:
        self._seen("Heartbeat")
        self.view.heartbeats += 1
        return res201.Heartbeat(current_time=self.csms.now())

    @on(A201.status_notification)
    def _status(self, evse_id: int, connector_status: str, **kw: Any) -> Any:
        self._seen("StatusNotification")
        self.view.status[evse_id] = connector_status
        return res201.StatusNotification()

    @on(A201.transaction_event)
    def _tx(self, event_type: str, transaction_info: dict, **kw: Any) -> Any:
        self._seen("TransactionEvent")
        tx = transaction_info["transaction_id"]
        if event_type == "Ended":
            self.view.transactions.pop(tx, None)
        else:
            self.view.transactions.setdefault(tx, {"evse": (kw.get("evse") or {}).get("id")})
        return res201.TransactionEvent()

    @on(A201.security_event_notification)
    def _sec(self, type: str, **kw: Any) -> Any:
        self._seen("SecurityEventNotification")
        self.view.security_events.append(type)
        return res201.SecurityEventNotification()

    @on(A201.firmware_status_notification)
    def _fw(self, status: str, **kw: Any) -> Any:
        self._seen("FirmwareStatusNotification")
        self.view.firmware.append(status)
        return res201.FirmwareStatusNotification()

    @on(A201.notify_report)
    def _report(self, **kw: Any) -> Any:
        return res201.NotifyReport()


class Csms:
    """Serve chargers on ``ws://host:port/<charger id>`` (subprotocol picks the version)."""

    def __init__(self, clock: Clock, *, heartbeat_s: int = 300, response_timeout_s: float = 10.0) -> None:
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.response_timeout_s = response_timeout_s
        self.chargers: dict[str, Any] = {}          # id -> live ChargePoint
        self.views: dict[str, ChargerView] = {}
        self._tx = 5000
        self._server: Any = None
        self.port: int | None = None

    def now(self) -> str:
        return _iso(self.clock.now_ms())

    def next_tx_id(self) -> int:
        self._tx += 1
        return self._tx

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await websockets.serve(self._handle, host, port, subprotocols=["ocpp2.0.1", "ocpp1.6"],
                                              backlog=1024)   # fleets: hundreds of chargers connect at once
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, charger_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{charger_id}"

    async def _handle(self, ws: Any) -> None:
        cid = ws.request.path.strip("/").rsplit("/", 1)[-1]
        version = "2.0.1" if ws.subprotocol == "ocpp2.0.1" else "1.6"
        cls = _Handlers201 if version == "2.0.1" else _Handlers16
        cp = cls(cid, ws, response_timeout=self.response_timeout_s)
        cp.csms = self
        view = self.views.get(cid)
        if view is None or view.version != version:
            view = self.views[cid] = ChargerView(cid, version)
        cp.view = view
        self.chargers[cid] = cp
        try:
            await cp.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if self.chargers.get(cid) is cp:
                del self.chargers[cid]

    async def wait_connected(self, charger_id: str, timeout_s: float = 10.0) -> None:
        """Wait (real seconds) until the charger is connected and has booted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (charger_id in self.chargers and self.views[charger_id].boots > 0):
            if loop.time() > deadline:
                raise CsmsError(f"charger {charger_id} did not connect and boot within {timeout_s}s")
            await asyncio.sleep(0.005)

    async def send(self, charger_id: str, action: str, *, unique_id: str | None = None, **payload: Any) -> Any:
        """Send one CSMS→charger CALL; returns the CALLRESULT payload object."""
        cp = self.chargers.get(charger_id)
        if cp is None:
            raise CsmsError(f"charger {charger_id} is not connected")
        module = call201 if self.views[charger_id].version == "2.0.1" else call16
        cls = getattr(module, action, None)
        if cls is None:
            raise CsmsError(f"{action} is not an OCPP {self.views[charger_id].version} CSMS call")
        try:
            return await cp.call(cls(**payload), suppress=False, unique_id=unique_id)
        except (asyncio.TimeoutError, websockets.exceptions.ConnectionClosed) as exc:
            raise CsmsError(f"{action} to {charger_id}: {type(exc).__name__}") from None

    async def send_raw(self, charger_id: str, frame: list[Any]) -> None:
        """Put an arbitrary OCPP-J frame on the wire (replays, malformed messages)."""
        cp = self.chargers.get(charger_id)
        if cp is None:
            raise CsmsError(f"charger {charger_id} is not connected")
        await cp._connection.send(json.dumps(frame))

    # -- benign operator behaviour -------------------------------------------------------
    async def benign_day_ops(self, charger_id: str, *, id_tag: str = "FLEET-0042", hours: float = 2.0) -> list[str]:
        """Remote start with a 16 A profile, a configuration read, stop after ``hours``."""
        done = []
        v201 = self.views[charger_id].version == "2.0.1"
        if v201:
            await self.send(charger_id, "GetVariables", get_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}])
            res = await self.send(charger_id, "RequestStartTransaction", remote_start_id=1,
                                  id_token={"id_token": id_tag, "type": "Central"}, evse_id=1)
            tx = getattr(res, "transaction_id", None)
        else:
            await self.send(charger_id, "GetConfiguration", key=["HeartbeatInterval"])
            await self.send(charger_id, "RemoteStartTransaction", id_tag=id_tag, connector_id=1, charging_profile={
                "charging_profile_id": 1, "stack_level": 0, "charging_profile_purpose": "TxProfile",
                "charging_profile_kind": "Absolute", "charging_schedule": {
                    "charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": 16}]}})
            tx = None
        done.append("remote_start")
        await self.clock.sleep(hours * 3600)
        if tx is None:
            tx = next((t for t, info in self.views[charger_id].transactions.items() if info.get("connector") == 1), None)
        if tx is not None:
            if v201:
                await self.send(charger_id, "RequestStopTransaction", transaction_id=str(tx))
            else:
                await self.send(charger_id, "RemoteStopTransaction", transaction_id=int(tx))
            done.append("remote_stop")
        return done

    async def firmware_update(self, charger_id: str, version: str) -> Any:
        loc = f"{VENDOR_FIRMWARE_HOST}/vs22-{version}.bin"
        if self.views[charger_id].version == "2.0.1":
            return await self.send(charger_id, "UpdateFirmware", request_id=1, firmware={
                "location": loc, "retrieve_date_time": self.now(), "signature": "c2ln", "signing_certificate": "cert"})
        return await self.send(charger_id, "SignedUpdateFirmware", request_id=1, firmware={
            "location": loc, "retrieve_date_time": self.now(), "signing_certificate": "cert", "signature": "c2ln"})
