"""Simulated backends that send remote commands to vehicles: the OEM cloud, a dealer portal
and the owner's app. Each speaks through principals that carry what real ones carry:

- an identity and role (owner, provider, dealer, employee, roadside, fleet_admin),
- an OAuth/KUKSA-style token (claims ``aud`` = VIN, ``scope`` list, ``iat``/``exp`` in ms),
- optionally a Tesla-style virtual key: commands signed with Ed25519 over a canonical
  payload carrying a fresh nonce and the send time, verified by the TCU,
- a network address, and latency (the command reaches the car ``latency_ms`` later).

``Backend.command(...)`` builds a ``RemoteCommand``; ``await backend.send(vehicle, ...)``
delivers it after the latency and returns the TCU's ``CommandResult``. ``replay(cmd)``
re-delivers a captured command unchanged (same nonce, same signature), as an attacker would.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .clock import Clock
from .vehicle import CommandResult, RemoteCommand, VehicleModel

DAY_S = 86_400
DEFAULT_SCOPES = ("read:Vehicle", "actuate:Vehicle.Cabin.Door", "actuate:Vehicle.Body",
                  "actuate:Vehicle.Powertrain.TractionBattery.Charging", "actuate:Vehicle.Cabin.HVAC")


@dataclass(slots=True, kw_only=True)
class Principal:
    id: str
    role: str
    channel: str
    auth: str = "oauth"
    kid: str | None = None
    net: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    token_issued_ms: int = 0
    token_ttl_s: int = 3600
    audience: str | None = None           # None: the target VIN
    signing_key: Ed25519PrivateKey | None = field(default=None, repr=False)

    def claims(self, vin: str, now_ms: int) -> dict[str, Any]:
        """Token claims as the TCU sees them (times in ms, like every time in a record)."""
        iat = self.token_issued_ms
        return {"sub": self.id, "aud": self.audience or vin, "scope": list(self.scopes),
                "iat": iat, "exp": iat + self.token_ttl_s * 1000}


class Backend:
    def __init__(self, name: str, channel: str, clock: Clock, *, seed: int = 0,
                 latency_ms: tuple[int, int] = (80, 400), net: str = "198.51.100.10") -> None:
        self.name, self.channel, self.clock = name, channel, clock
        self.rng = random.Random(seed)
        self.latency_ms = latency_ms
        self.net = net
        self.principals: dict[str, Principal] = {}
        self.sent = 0

    def principal(self, id: str, role: str, *, auth: str = "oauth", scopes: tuple[str, ...] = DEFAULT_SCOPES,
                  token_age_s: float = 60.0, token_ttl_s: int = 3600, audience: str | None = None,
                  signing: bool = False, net: str | None = None) -> Principal:
        key = Ed25519PrivateKey.generate() if signing else None
        p = Principal(id=id, role=role, channel=self.channel, auth=auth, scopes=scopes,
                      kid=f"{self.name}:{id}", net=net or self.net, audience=audience,
                      token_issued_ms=int(self.clock.now_ms() - token_age_s * 1000), token_ttl_s=token_ttl_s,
                      signing_key=key)
        self.principals[id] = p
        return p

    def refresh_token(self, p: Principal) -> None:
        p.token_issued_ms = self.clock.now_ms()

    def enroll_key(self, p: Principal, vehicle: VehicleModel) -> None:
        """Pair the principal's virtual key with the car (what in-car pairing does)."""
        if p.signing_key is None:
            raise ValueError(f"principal {p.id} has no signing key")
        vehicle.virtual_keys[p.kid or p.id] = p.signing_key.public_key()

    def command(self, p: Principal, vin: str, name: str, **args: Any) -> RemoteCommand:
        now = self.clock.now_ms()
        nonce = f"{self.rng.getrandbits(64):016x}"
        full = name if name.startswith("tcu.") else f"tcu.{name}"
        sig = payload = None
        if p.signing_key is not None:
            payload = json.dumps({"cmd": full, "args": args, "vin": vin, "nonce": nonce, "ts": now},
                                 sort_keys=True, separators=(",", ":")).encode()
            sig = p.signing_key.sign(payload)
        return RemoteCommand(name=full, args=dict(args), principal=p.id, role=p.role, channel=p.channel,
                             auth=p.auth, kid=p.kid, net=p.net, token=p.claims(vin, now),
                             nonce=nonce if p.signing_key is not None else None, sent_ms=now,
                             signature=sig, signed_payload=payload)

    async def deliver(self, vehicle: VehicleModel, cmd: RemoteCommand) -> CommandResult:
        lo, hi = self.latency_ms
        await self.clock.sleep(self.rng.uniform(lo, hi) / 1000)
        self.sent += 1
        self.clock.hold_step()
        return await vehicle.execute(cmd, self.clock.now_ms())

    async def send(self, vehicle: VehicleModel, p: Principal, name: str, *, fresh_token: bool = False,
                   **args: Any) -> CommandResult:
        """Build, sign and send a fresh command; it reaches the car after the latency.

        The command is stamped when it leaves the backend, after the backend's own
        processing time: under time compression a busy event loop would otherwise turn
        real scheduling lag into minutes of simulated clock skew."""
        lo, hi = self.latency_ms
        await self.clock.sleep(self.rng.uniform(lo, hi) / 1000)
        self.sent += 1
        self.clock.hold_step()     # stamping and handling at the car take no simulated time (clock.py)
        if fresh_token:            # the app's token refreshed for this command: minted as it leaves, so event
            self.refresh_token(p)  # loop lag during the latency (hours at 7200x) cannot age it past its TTL
        return await vehicle.execute(self.command(p, vehicle.vin, name, **args), self.clock.now_ms())

    async def replay(self, vehicle: VehicleModel, cmd: RemoteCommand) -> CommandResult:
        """Deliver a captured command again, byte for byte (same nonce and signature)."""
        return await self.deliver(vehicle, replace(cmd))


def oem_cloud(clock: Clock, seed: int = 0) -> Backend:
    return Backend("oem", "oem_cloud", clock, seed=seed, latency_ms=(50, 250), net="203.0.113.20")


def dealer_portal(clock: Clock, seed: int = 0) -> Backend:
    return Backend("dealer", "dealer_portal", clock, seed=seed, latency_ms=(150, 900), net="192.0.2.44")


def owner_app(clock: Clock, seed: int = 0) -> Backend:
    return Backend("app", "app", clock, seed=seed, latency_ms=(120, 600), net="100.64.7.9")
