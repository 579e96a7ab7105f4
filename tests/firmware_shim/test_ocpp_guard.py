"""OcppGuard with a real `ocpp` CSMS and charger talking over real websockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from ocpp.messages import CallResult, validate_payload
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from firmware_shim import Shim
from firmware_shim.integrations.ocpp_guard import REFUSALS, UNENFORCEABLE, guard_charge_point
from firmware_shim.redact import hash_value
from firmware_shim.testing import FakeAgent

KEY = b"ocpp-guard-test-key-0123456789ab"


def judge(c: dict[str, Any]) -> tuple[str, list[str]]:
    args = c["args"]
    if c["cmd"] == "ocpp.UpdateFirmware":
        return "block", ["firmware-from-unknown-host"]
    if args.get("connector_id") == 2 or args.get("evse_id") == 2:  # rules see snake_case
        return "block", ["unlock-during-session"]
    return "allow", []


class Charger16(CP16):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.unlocked: list[int] = []
        self.after_ran: list[int] = []

    @on("UnlockConnector")
    def on_unlock(self, connector_id: int) -> result16.UnlockConnector:
        self.unlocked.append(connector_id)
        return result16.UnlockConnector(status="Unlocked")

    @after("UnlockConnector")
    def after_unlock(self, connector_id: int) -> None:
        self.after_ran.append(connector_id)

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, **kw: Any) -> result16.RemoteStartTransaction:
        return result16.RemoteStartTransaction(status="Accepted")

    @on("UpdateFirmware")
    def on_update_firmware(self, **kw: Any) -> result16.UpdateFirmware:
        self.unlocked.append(-1)
        return result16.UpdateFirmware()


class Charger201(CP201):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.unlocked: list[int] = []

    @on("UnlockConnector")
    def on_unlock(self, evse_id: int, connector_id: int) -> result201.UnlockConnector:
        self.unlocked.append(evse_id)
        return result201.UnlockConnector(status="Unlocked")


class Csms16(CP16):
    @on("BootNotification")
    def on_boot(self, **kw: Any) -> result16.BootNotification:
        return result16.BootNotification(current_time="2025-01-01T00:00:00Z", interval=300, status="Accepted")


class Csms201(CP201):
    @on("BootNotification")
    def on_boot(self, **kw: Any) -> result201.BootNotification:
        return result201.BootNotification(current_time="2025-01-01T00:00:00Z", interval=300, status="Accepted")

    @on("SecurityEventNotification")
    def on_security_event(self, **kw: Any) -> result201.SecurityEventNotification:
        return result201.SecurityEventNotification()


async def _session(version: str, agent_address: str, exchange) -> tuple[FakeAgent, Any]:
    subprotocol = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}[version]
    csms_cls, charger_cls = {"1.6": (Csms16, Charger16), "2.0.1": (Csms201, Charger201)}[version]
    csms_ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def on_connect(ws: Any) -> None:
        csms = csms_cls("CP-1", ws)
        csms_ready.set_result(csms)
        try:
            await csms.start()
        except websockets.ConnectionClosed:
            pass

    fake = FakeAgent(agent_address, judge=judge).start()
    shim = Shim(agent=agent_address, redact_fields=("idTag",), redact_key=KEY, check_deadline_ms=2000)
    shim.start()
    try:
        async with websockets.serve(on_connect, "127.0.0.1", 0, subprotocols=[subprotocol]) as server:
            port = server.sockets[0].getsockname()[1]
            async with websockets.connect(f"ws://127.0.0.1:{port}/CP-1", subprotocols=[subprotocol]) as ws:
                charger = charger_cls("CP-1", ws)
                guard_charge_point(charger, shim, csms_id="csms-test")
                runner = asyncio.create_task(charger.start())
                csms = await asyncio.wait_for(csms_ready, 5)
                try:
                    await exchange(csms, charger)
                finally:
                    runner.cancel()
        assert shim.flush(3000)
        return fake, charger
    finally:
        shim.close()
        fake.stop()


def _wait_records(fake: FakeAgent, n: int) -> list[dict[str, Any]]:
    assert fake.wait_for(lambda: len(fake.records()) >= n), fake.records()
    return fake.records()


async def test_v16_blocked_unlock_refused_on_the_wire_allowed_goes_through(agent_address: str) -> None:
    answers: dict[str, Any] = {}

    async def exchange(csms: Any, charger: Any) -> None:
        boot = await charger.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
        answers["boot"] = boot.status
        answers["allowed"] = await csms.call(call16.UnlockConnector(connector_id=1))
        answers["blocked"] = await csms.call(call16.UnlockConnector(connector_id=2))
        answers["start"] = await csms.call(call16.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1))
        answers["fw"] = await csms.call(call16.UpdateFirmware(location="http://x/fw.bin", retrieve_date="2025-01-01T00:00:00Z"))
        await asyncio.sleep(0)  # let the @after hook task of the allowed unlock run

    fake, charger = await _session("1.6", agent_address, exchange)
    assert answers["boot"] == "Accepted"
    assert answers["allowed"].status == "Unlocked"
    assert answers["blocked"].status == "UnlockFailed"  # the CSMS parsed the refusal
    assert answers["start"].status == "Accepted"
    assert charger.unlocked == [1, -1]  # the blocked unlock never reached the handler
    assert charger.after_ran == [1]  # nor its @after hook

    records = _wait_records(fake, 5)
    summary = [(r["api"], r["x"]["dir"], r["st"]) for r in records]
    assert summary == [
        ("ocpp.BootNotification", "out", "Accepted"),
        ("ocpp.UnlockConnector", "in", "Unlocked"),
        ("ocpp.UnlockConnector", "in", "UnlockFailed"),
        ("ocpp.RemoteStartTransaction", "in", "Accepted"),
        ("ocpp.UpdateFirmware", "in", "ok"),
    ]
    unlock_ok, unlock_blocked, start, fw = records[1:5]
    assert unlock_ok["x"]["blocked"] is False and unlock_ok["x"]["v"] == "allow"
    assert unlock_blocked["x"]["blocked"] is True and unlock_blocked["x"]["v"] == "block"
    src = unlock_blocked["src"]
    assert src["id"] == "csms-test" and src["net"] and src["msg_id"]  # the OCPP uniqueId (replay key)
    assert src["msg_id"] != unlock_ok["src"]["msg_id"]
    assert unlock_blocked["sub"] == "2" and unlock_blocked["rq"] > 0 and unlock_blocked["rs"] > 0
    # configured as the wire spells it (idTag), redacted in the snake_case args the rules see
    assert start["x"]["args"]["id_tag"] == hash_value(KEY, "04A1B2C3")
    # 1.6 UpdateFirmware has no refusal: it runs (charger.unlocked has -1), judged and flagged
    assert (fw["x"]["v"], fw["x"]["blocked"], fw["x"]["unenforceable"]) == ("block", False, True)
    checked = [c["c"]["cmd"] for c in fake.of_type("chk")]
    assert checked == ["ocpp.UnlockConnector", "ocpp.UnlockConnector", "ocpp.RemoteStartTransaction", "ocpp.UpdateFirmware"]
    assert "04A1B2C3" not in repr(fake.frames)


async def test_v201_blocked_unlock_answers_ongoing_authorized_transaction(agent_address: str) -> None:
    answers: dict[str, Any] = {}

    async def exchange(csms: Any, charger: Any) -> None:
        answers["boot"] = await charger.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        answers["allowed"] = await csms.call(call201.UnlockConnector(evse_id=1, connector_id=1))
        answers["blocked"] = await csms.call(call201.UnlockConnector(evse_id=2, connector_id=1))
        await charger.call(call201.SecurityEventNotification(type="TamperDetectionActivated",
                                                             timestamp="2025-01-01T02:40:00Z"))

    fake, charger = await _session("2.0.1", agent_address, exchange)
    assert answers["boot"].status == "Accepted"
    assert answers["allowed"].status == "Unlocked"
    assert answers["blocked"].status == "OngoingAuthorizedTransaction"
    assert answers["blocked"].status_info == {"reason_code": "SecurityPolicy"}
    assert charger.unlocked == [1]
    records = _wait_records(fake, 4)
    assert [(r["api"], r["st"]) for r in records] == [
        ("ocpp.BootNotification", "Accepted"),
        ("ocpp.UnlockConnector", "Unlocked"),
        ("ocpp.UnlockConnector", "OngoingAuthorizedTransaction"),
        ("ocpp.SecurityEventNotification", "ok"),
    ]
    # an outgoing security event carries its payload, so the agent's rules can observe it
    assert records[3]["x"]["args"] == {"type": "TamperDetectionActivated", "timestamp": "2025-01-01T02:40:00Z"}
    assert "args" not in records[0]["x"]  # routine outgoing calls are recorded without payload


SAMPLE_REQUESTS: dict[str, dict[str, Any]] = {
    "SetVariables": {
        "setVariableData": [
            {"attributeValue": "1", "component": {"name": "AuthCtrlr"}, "variable": {"name": "Enabled"}},
            {"attributeType": "Target", "attributeValue": "2", "component": {"name": "X"}, "variable": {"name": "Y"}},
        ]
    }
}


@pytest.mark.parametrize(
    ("version", "action"), [(v, a) for v, table in REFUSALS.items() for a in sorted(table)]
)
async def test_every_refusal_is_schema_valid(version: str, action: str) -> None:
    payload = REFUSALS[version][action](SAMPLE_REQUESTS.get(action, {}))
    result = CallResult(unique_id="1", payload=payload)
    result.action = action
    await validate_payload(result, version)  # raises on a spec-invalid refusal
    assert action not in UNENFORCEABLE[version]
