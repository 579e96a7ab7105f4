"""Guard for the `ocpp` package's ChargePoint (OCPP 1.6 and 2.0.1), charger side.

    cp = MyChargePoint("CP-1", websocket)          # an ocpp.v16/v201 ChargePoint subclass
    guard_charge_point(cp, shim, csms_id="csms-prod")
    await cp.start()

- Every incoming CSMS call and every outgoing call is recorded (`ocpp.<Action>`, dir,
  status, latency µs, request/response bytes; incoming arguments under `x.args`, redacted
  by the shim's `redact_fields`, e.g. idTag).
- Sensitive CSMS commands (the keys of `REFUSALS` for the version, or `sensitive=`) are
  judged with `shim.check()` (in a worker thread, so the event loop never blocks) before
  the vendor's handler runs. A blocked one is answered with the protocol's own refusal
  (table below, each validated against the OCPP JSON schema) and the handler, including
  its `@after` hook, does not run.
- Commands whose response has no refusal (1.6 UpdateFirmware and GetDiagnostics) cannot
  be refused within the protocol: they run, and the record says `unenforceable: true`
  beside the verdict, so the agent's alert stands as evidence.

Refusal choices: 1.6 UnlockConnector answers `UnlockFailed` (the connector stays locked;
`NotSupported` would tell the CSMS the charger has no lock at all); 2.0.1 answers
`OngoingAuthorizedTransaction` (the spec's refusal for an unlock the charger will not do
while a session may be live). Status-only responses answer `Rejected`; SendLocalList and
DeleteCertificate, whose enums have no Rejected, answer `Failed`; 2.0.1 SetVariables
answers `Rejected` for every variable. OCPP 2.1 and other versions are recorded only.

CPython only (asyncio, the `ocpp` package).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from ocpp.charge_point import camel_to_snake_case  # type: ignore[import-untyped]
from ocpp.messages import validate_payload  # type: ignore[import-untyped]

from firmware_shim.shim import Shim
from firmware_shim.verdict import Verdict

__all__ = ["OcppGuard", "guard_charge_point", "REFUSALS", "UNENFORCEABLE"]

Refusal = Callable[[dict[str, Any]], dict[str, Any]]
_INFO = {"reasonCode": "SecurityPolicy"}


def _status(value: str) -> Refusal:
    return lambda payload: {"status": value}


def _status_info(value: str) -> Refusal:
    return lambda payload: {"status": value, "statusInfo": dict(_INFO)}


def _set_variables_rejected(payload: dict[str, Any]) -> dict[str, Any]:
    results = []
    for item in payload.get("setVariableData", []):
        result = {"attributeStatus": "Rejected", "component": item["component"], "variable": item["variable"]}
        if "attributeType" in item:
            result["attributeType"] = item["attributeType"]
        results.append(result)
    return {"setVariableResult": results}


REFUSALS: dict[str, dict[str, Refusal]] = {
    "1.6": {
        "UnlockConnector": _status("UnlockFailed"),
        "RemoteStartTransaction": _status("Rejected"),
        "RemoteStopTransaction": _status("Rejected"),
        "Reset": _status("Rejected"),
        "ChangeConfiguration": _status("Rejected"),
        "ChangeAvailability": _status("Rejected"),
        "ClearCache": _status("Rejected"),
        "SendLocalList": _status("Failed"),
        "DataTransfer": _status("Rejected"),
        "SetChargingProfile": _status("Rejected"),
        "TriggerMessage": _status("Rejected"),
        "ReserveNow": _status("Rejected"),
        "CancelReservation": _status("Rejected"),
    },
    "2.0.1": {
        "UnlockConnector": _status_info("OngoingAuthorizedTransaction"),
        "RequestStartTransaction": _status_info("Rejected"),
        "RequestStopTransaction": _status_info("Rejected"),
        "Reset": _status_info("Rejected"),
        "SetVariables": _set_variables_rejected,
        "UpdateFirmware": _status_info("Rejected"),
        "ChangeAvailability": _status_info("Rejected"),
        "ClearCache": _status_info("Rejected"),
        "SendLocalList": _status_info("Failed"),
        "DataTransfer": _status_info("Rejected"),
        "GetLog": _status_info("Rejected"),
        "InstallCertificate": _status_info("Rejected"),
        "DeleteCertificate": _status_info("Failed"),
        "CertificateSigned": _status_info("Rejected"),
        "SetNetworkProfile": _status_info("Rejected"),
        "SetChargingProfile": _status_info("Rejected"),
        "TriggerMessage": _status_info("Rejected"),
        "CustomerInformation": _status_info("Rejected"),
        "ReserveNow": _status_info("Rejected"),
    },
}
# Sensitive, but the response has no field that can refuse: judged and recorded only.
UNENFORCEABLE: dict[str, frozenset[str]] = {
    "1.6": frozenset({"UpdateFirmware", "GetDiagnostics"}),
    "2.0.1": frozenset(),
}
# Outgoing messages whose payload the rules need (they are observed as local events, e.g.
# CP-16 tamper, CP-19 clock change). Other outgoing calls are recorded without payload.
EVENT_ACTIONS = frozenset({"SecurityEventNotification", "FirmwareStatusNotification", "LogStatusNotification",
                           "SignedFirmwareStatusNotification"})

_SUBJECT_KEYS = ("connector_id", "evse_id", "transaction_id", "id_tag", "reservation_id")  # snake_case args
_MAX_INFLIGHT = 64


def _subject(payload: dict[str, Any]) -> str | None:
    for key in _SUBJECT_KEYS:
        if key in payload:
            return str(payload[key])
    id_token = payload.get("id_token")
    if isinstance(id_token, dict) and "id_token" in id_token:
        return str(id_token["id_token"])
    return None


def _status_of(payload: Any) -> str:
    status = getattr(payload, "status", None) if not isinstance(payload, dict) else payload.get("status")
    if status is None:
        return "ok"
    return str(getattr(status, "value", status))


class OcppGuard:
    def __init__(
        self,
        cp: Any,
        shim: Shim,
        *,
        csms_id: str = "csms",
        sensitive: Iterable[str] | None = None,
        check_deadline_ms: int | None = None,
    ) -> None:
        self.cp = cp
        self.shim = shim
        self.version = str(getattr(cp, "_ocpp_version", "?"))
        self.refusals = REFUSALS.get(self.version, {})
        unenforceable = UNENFORCEABLE.get(self.version, frozenset())
        self.sensitive = frozenset(sensitive) if sensitive is not None else frozenset(self.refusals) | unenforceable
        self.check_deadline_ms = check_deadline_ms
        self.src: dict[str, Any] = {"id": csms_id}
        remote = getattr(getattr(cp, "_connection", None), "remote_address", None)
        if isinstance(remote, tuple) and len(remote) >= 2:
            self.src["net"] = f"{remote[0]}:{remote[1]}"
        self._inflight: dict[str, dict[str, Any]] = {}
        self._orig_handle_call = cp._handle_call
        self._orig_send = cp._send
        self._orig_call = cp.call

    def install(self) -> OcppGuard:
        self.cp._handle_call = self._handle_call
        self.cp._send = self._send
        self.cp.call = self._call
        return self

    # -- incoming CSMS calls -----------------------------------------------------------

    async def _handle_call(self, msg: Any) -> Any:
        action = msg.action
        wire = msg.payload if isinstance(msg.payload, dict) else {}
        # Rules see the payload as the ocpp package's handlers do (snake_case), and the
        # message's uniqueId (the replay key, CP-18) with the caller.
        payload = camel_to_snake_case(wire)
        src = dict(self.src, msg_id=str(msg.unique_id)[:64])
        entry: dict[str, Any] = {
            "action": action,
            "t0": time.perf_counter_ns(),
            "rq": len(msg.to_json()),
            "args": payload,
            "src": src,
        }
        if len(self._inflight) >= _MAX_INFLIGHT:  # a response that never went out
            self._inflight.pop(next(iter(self._inflight)))
            self.shim._count("ocpp_inflight_evicted")
        self._inflight[msg.unique_id] = entry
        if action in self.sensitive:
            verdict: Verdict = await asyncio.to_thread(
                self.shim.check, "ocpp." + action, payload, src, _subject(payload), self.check_deadline_ms
            )
            entry["verdict"] = verdict
            if not verdict.allowed:
                refusal = self.refusals.get(action)
                if refusal is not None:
                    entry["blocked"] = True
                    result = msg.create_call_result(refusal(wire))
                    await validate_payload(result, self.version)
                    await self._send(result.to_json())
                    return None
                entry["unenforceable"] = True
        return await self._orig_handle_call(msg)

    async def _send(self, message: str) -> None:
        entry = None
        try:
            parsed = json.loads(message)
            if isinstance(parsed, list) and len(parsed) >= 3 and parsed[0] in (3, 4):
                entry = self._inflight.pop(parsed[1], None)
        except ValueError:
            self.shim._count("ocpp_unparsed_send")
        await self._orig_send(message)
        if entry is not None:
            if parsed[0] == 3:
                status = _status_of(parsed[2])
            else:
                status = "CallError:" + str(parsed[2])
            self._record_in(entry, status, len(message))

    def _record_in(self, entry: dict[str, Any], status: str, rs: int) -> None:
        x: dict[str, Any] = {"dir": "in", "ocpp": self.version, "args": entry["args"]}
        verdict = entry.get("verdict")
        if verdict is not None:
            x["v"] = verdict.action
            x["vsrc"] = verdict.source
            x["blocked"] = bool(entry.get("blocked"))
            if entry.get("unenforceable"):
                x["unenforceable"] = True
        self.shim.record(
            "ocpp." + entry["action"],
            src=entry["src"],
            sub=_subject(entry["args"]),
            st=status,
            lat=(time.perf_counter_ns() - entry["t0"]) // 1000,
            rq=entry["rq"],
            rs=rs,
            **x,
        )

    # -- outgoing calls ----------------------------------------------------------------

    async def _call(self, payload: Any, *args: Any, **kwargs: Any) -> Any:
        action = payload.__class__.__name__
        t0 = time.perf_counter_ns()
        status = "error"
        try:
            response = await self._orig_call(payload, *args, **kwargs)
            status = "no_response" if response is None else _status_of(response)
            return response
        except asyncio.TimeoutError:
            status = "timeout"
            raise
        except Exception as exc:
            status = "error:" + type(exc).__name__
            raise
        finally:
            extra: dict[str, Any] = {}
            if action in EVENT_ACTIONS and dataclasses.is_dataclass(payload):
                extra["args"] = {k: v for k, v in dataclasses.asdict(payload).items() if v is not None}
            self.shim.record(
                "ocpp." + action,
                src={"id": "self"},
                st=status,
                lat=(time.perf_counter_ns() - t0) // 1000,
                dir="out",
                ocpp=self.version,
                **extra,
            )


def guard_charge_point(cp: Any, shim: Shim, **options: Any) -> OcppGuard:
    """Install an OcppGuard on `cp` (an ocpp.v16/v201 ChargePoint); returns the guard."""
    return OcppGuard(cp, shim, **options).install()
