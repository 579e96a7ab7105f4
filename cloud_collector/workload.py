"""Stand-in for hw_sim's traffic until it lands: a charger and a TCU, as records over time.

Charger (OCPP 1.6J, 2 connectors): the local HMI polls the REST status API every second,
the meter is read over Modbus every second per connector, MeterValues go to the CSMS
every 10 s per charging connector, Heartbeat every 60 s, StatusNotification on changes,
Authorize/Start/StopTransaction per session, and remote commands now and then
(RemoteStart, UnlockConnector, ChangeConfiguration, Reset, TriggerMessage).

TCU: apps read GNSS position and CAN signals (speed, SoC, doors) 1–2 times a second,
the infotainment polls vehicle state, and the backend sends a remote command now and
then (door lock/unlock, climate, charge start/stop, OTA check).

``events(kind, seconds, seed)`` yields ``(t_ms, fields)``, fields without the
agent-set header; ``seal(...)`` turns them into checkpoints with the real Sealer and the
agent's cut rules (256 records or the ledger's checkpoint interval, 10 s by default,
at once after a security-class record,
heartbeat after 60 s idle, start and stop).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

from agent.core.chain import ChainState, Sealed, Sealer
from agent.core.export import Trust, enrollment_doc
from agent.core.keys import generate_signer
from agent.core.record import SECURITY_KINDS

CSMS = {"id": "csms", "net": "52.28.14.7", "auth": "tls-client", "kid": "csms-2024"}
HMI = {"id": "hmi", "net": "127.0.0.1", "auth": "uds"}
METER = {"id": "meter-bus", "net": "rs485:1"}


def _charger(rng: random.Random, seconds: int) -> Iterator[tuple[int, dict[str, Any]]]:
    wh = [1_250_000, 884_000]
    charging = [False, False]
    tx = 4100
    for s in range(seconds):
        base = s * 1000
        yield base + rng.randint(0, 40), {"kind": "api", "api": "rest.GET /v1/status", "src": HMI, "st": 200,
                                           "lat": rng.randint(300, 900), "rq": 0, "rs": rng.choice((412, 418, 420))}
        for c in (0, 1):
            if charging[c]:
                wh[c] += rng.randint(2, 3) if c else rng.randint(3, 4)
            yield base + 100 + c * 50 + rng.randint(0, 9), {
                "kind": "api", "api": "modbus.read_holding", "src": METER, "sub": f"conn-{c + 1}", "st": 0,
                "lat": rng.randint(4000, 9000), "rq": 8, "rs": 45,
                "x": {"reg": 30001 + c * 100, "n": 20, "wh": wh[c]}}
            if charging[c] and s % 10 == c * 5:
                yield base + 300 + rng.randint(0, 50), {
                    "kind": "api", "api": "ocpp.MeterValues", "src": CSMS, "sub": f"conn-{c + 1}", "st": "Accepted",
                    "lat": rng.randint(40_000, 140_000), "rq": rng.randint(300, 340), "rs": 2,
                    "x": {"tx": tx - 1 + c, "wh": wh[c], "w": 11_000 + rng.randint(-300, 300),
                          "a": 16, "v": 230 + rng.randint(-3, 3)}}
        if s % 60 == 30:
            yield base + 500, {"kind": "api", "api": "ocpp.Heartbeat", "src": CSMS, "st": "Accepted",
                               "lat": rng.randint(30_000, 90_000), "rq": 2, "rs": 48}
        if s % 240 == 7:  # a session starts or stops on one connector
            c = (s // 240) % 2
            charging[c] = not charging[c]
            if charging[c]:
                tx += 1
                tag = f"04A2{rng.randint(0, 0xFFFFFF):06X}"
                yield base + 600, {"kind": "api", "api": "ocpp.Authorize", "src": CSMS, "sub": tag, "st": "Accepted",
                                   "lat": rng.randint(50_000, 200_000), "rq": 40, "rs": 60}
                yield base + 800, {"kind": "api", "api": "ocpp.StartTransaction", "src": CSMS, "sub": f"conn-{c + 1}",
                                   "st": "Accepted", "lat": rng.randint(50_000, 200_000), "rq": 120, "rs": 70,
                                   "x": {"tx": tx, "meter_start": wh[c]}}
            else:
                yield base + 800, {"kind": "api", "api": "ocpp.StopTransaction", "src": CSMS, "sub": f"conn-{c + 1}",
                                   "st": "Accepted", "lat": rng.randint(50_000, 200_000), "rq": 180, "rs": 40,
                                   "x": {"tx": tx, "meter_stop": wh[c], "reason": "Local"}}
            yield base + 900, {"kind": "api", "api": "ocpp.StatusNotification", "src": CSMS, "sub": f"conn-{c + 1}",
                               "st": "Accepted", "lat": rng.randint(30_000, 90_000), "rq": 110, "rs": 2,
                               "x": {"status": "Charging" if charging[c] else "Finishing", "err": "NoError"}}
        if rng.random() < 1 / 120:
            op = rng.choice(("RemoteStartTransaction", "UnlockConnector", "ChangeConfiguration", "TriggerMessage", "Reset"))
            yield base + 950, {"kind": "cmd", "api": f"ocpp.{op}", "src": CSMS, "sub": "conn-1", "st": "Accepted",
                               "lat": rng.randint(1_000, 5_000), "rq": rng.randint(60, 200), "rs": 30,
                               "v": "allow", "r": [], "rb": 3}


def _tcu(rng: random.Random, seconds: int) -> Iterator[tuple[int, dict[str, Any]]]:
    apps = [{"id": "nav", "net": "uds:/run/tcu.sock", "auth": "uid", "kid": "app-nav"},
            {"id": "fleet", "net": "uds:/run/tcu.sock", "auth": "uid", "kid": "app-fleet"},
            {"id": "ivi", "net": "192.168.7.2", "auth": "token", "kid": "ivi-01"}]
    vin = "WVWZZZE1ZPP012345"
    speed, soc, odo = 0, 640, 48_213_000
    for s in range(seconds):
        base = s * 1000
        speed = max(0, min(1300, speed + rng.randint(-40, 40)))
        odo += speed // 36
        yield base + rng.randint(0, 20), {"kind": "api", "api": "tcu.gnss.position", "src": apps[0], "sub": vin,
                                           "st": 0, "lat": rng.randint(200, 600), "rq": 0, "rs": 64}
        yield base + 500 + rng.randint(0, 20), {"kind": "api", "api": "tcu.gnss.position", "src": apps[0], "sub": vin,
                                                 "st": 0, "lat": rng.randint(200, 600), "rq": 0, "rs": 64}
        yield base + 200 + rng.randint(0, 30), {"kind": "api", "api": "tcu.can.read", "src": apps[1], "sub": vin,
                                                 "st": 0, "lat": rng.randint(800, 2500), "rq": 12, "rs": 24,
                                                 "x": {"sig": "vehicle.speed", "val": speed}}
        if s % 5 == 0:
            soc -= rng.randint(0, 1)
            yield base + 300, {"kind": "api", "api": "tcu.can.read", "src": apps[1], "sub": vin, "st": 0,
                               "lat": rng.randint(800, 2500), "rq": 12, "rs": 24, "x": {"sig": "battery.soc", "val": soc}}
        yield base + 700 + rng.randint(0, 30), {"kind": "api", "api": "rest.GET /v1/vehicle/state", "src": apps[2],
                                                 "sub": vin, "st": 200, "lat": rng.randint(1500, 6000), "rq": 0,
                                                 "rs": rng.randint(380, 420)}
        if s % 30 == 0:
            yield base + 800, {"kind": "api", "api": "tcu.odometer", "src": apps[1], "sub": vin, "st": 0,
                               "lat": 900, "rq": 0, "rs": 8, "x": {"m": odo}}
        if rng.random() < 1 / 180:
            op = rng.choice(("door_lock", "door_unlock", "climate_start", "charge_start", "ota_check"))
            yield base + 900, {"kind": "cmd", "api": f"tcu.{op}", "src": {"id": "backend", "net": "35.157.2.9",
                               "auth": "mtls", "kid": "be-2025"}, "sub": vin, "st": 0, "lat": rng.randint(5_000, 40_000),
                               "rq": 96, "rs": 16, "v": "allow" if speed < 50 or op == "ota_check" else "block",
                               "r": [] if speed < 50 else ["tcu.no_unlock_moving"], "rb": 3}


def events(kind: str, seconds: int, seed: int = 1, speed: int = 1) -> list[tuple[int, dict[str, Any]]]:
    """``speed`` > 1 time-compresses the traffic: a device ``speed`` times as busy (for sweeps)."""
    rng = random.Random(seed)
    gen = _charger if kind == "charger" else _tcu
    return sorted(((t // speed, f) for t, f in gen(rng, seconds * speed)), key=lambda e: e[0])


def seal(device_id: str, evs: list[tuple[int, dict[str, Any]]], *, wall0: int = 1_767_000_000_000,
         interval_ms: int | None = None, max_records: int | None = None,
         heartbeat_ms: int = 60_000) -> tuple[list[tuple[int, Sealed]], Trust]:
    """Checkpoints as the agent cuts them, as (time sealed ms, Sealed), and the trust to verify them.

    ``interval_ms`` and ``max_records`` default to the agent's own ``LedgerConfig``
    (``checkpoint_interval_ms``, ``checkpoint_records``; its byte cap is not reached by
    these small records).
    """
    from agent.config import LedgerConfig
    if interval_ms is None:
        interval_ms = LedgerConfig().checkpoint_interval_ms
    if max_records is None:
        max_records = LedgerConfig().checkpoint_records
    k0, signer = os.urandom(32), generate_signer()
    trust = Trust.from_enrollment(enrollment_doc(device_id, [(signer.kid, signer.alg, signer.public_bytes())], k0))
    sealer = Sealer(ChainState.genesis(device_id, k0), signer)
    out: list[tuple[int, Sealed]] = []
    now = 0
    out.append((0, sealer.seal(mono=0, wall=wall0, reason="start")))
    opened: int | None = None
    last_seal = 0
    for t, fields in evs:
        if opened is not None and t - opened >= interval_ms:  # the timer fired before this event
            out.append((opened + interval_ms, sealer.seal(mono=opened + interval_ms, wall=wall0 + opened + interval_ms, reason="timer")))
            last_seal, opened = opened + interval_ms, None
        while opened is None and t - last_seal >= heartbeat_ms:
            last_seal += heartbeat_ms
            out.append((last_seal, sealer.seal(mono=last_seal, wall=wall0 + last_seal, reason="heartbeat")))
        now = t
        sealer.append(fields, t, wall0 + t + 3)
        opened = t if opened is None else opened
        if fields["kind"] in SECURITY_KINDS:
            out.append((t, sealer.seal(mono=t, wall=wall0 + t, reason="security")))
            last_seal, opened = t, None
        elif sealer.pending >= max_records:
            out.append((t, sealer.seal(mono=t, wall=wall0 + t, reason="size")))
            last_seal, opened = t, None
    out.append((now + 1, sealer.seal(mono=now + 1, wall=wall0 + now + 1, reason="stop")))
    return out, trust
