"""A vehicle and its telematics unit (TCU): VSS-named live state, simple dynamics, and the
remote-command surface an OEM cloud, a dealer portal or an app reaches.

State keys are COVESA VSS paths (pinned to VSS 4.x naming; ``Vehicle.Private.*`` marks the
few values VSS has no signal for). ``twin()`` maps them onto the agent's twin keys
(agent/twin.py). Dynamics are deliberately simple: drive toward a place at a speed,
park, plug in and charge at a power until a target state of charge.

Remote commands arrive as ``RemoteCommand`` (from ``backends.py``). The TCU checks what a
real TCU checks itself (the command signature against its enrolled virtual keys), asks the
agent for a verdict through the shim (``link.check``, with the token claims, signature
result and nonce as arguments so the agent's rules can judge them), and carries the
command out only when the verdict allows it. Local actions (key fob, handle, in-car
pairing consent) are recorded as ``tcu.event.*`` and reach the twin.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from .link import DeviceLink, Verdict

KMH_PER_DEG = 111.0  # ~km per degree of latitude; good enough for a toy map

# VSS SelectedGear: 126 = park, 127 = drive, 0 = neutral, -1 = reverse
GEAR_P, GEAR_D, GEAR_N, GEAR_R = 126, 127, 0, -1
_GEAR_LETTER = {GEAR_P: "P", GEAR_D: "D", GEAR_N: "N", GEAR_R: "R"}

PLACES: dict[str, tuple[float, float, float]] = {
    # name: (lat, lon, radius km)
    "home": (48.1374, 11.5755, 0.15),
    "garage": (48.1381, 11.5763, 0.02),  # enclosed, inside "home" (~90 m from the drive)
    "work": (48.1620, 11.5860, 0.3),
    "dealer": (48.1200, 11.5400, 0.25),
    "supermarket": (48.1450, 11.5600, 0.2),
    "public_charger": (48.1500, 11.5900, 0.1),
    "highway": (48.3000, 11.8000, 5.0),
}
GEOFENCE_ORDER = ("garage", "home", "work", "dealer", "supermarket", "public_charger", "highway")

_UNSET = object()
MEASURED = frozenset({"vehicle.speed", "vehicle.is_moving", "battery.soc", "battery.lv_voltage", "charging.power_kw",
                      "vehicle.location.lat", "vehicle.location.lon"})
DOORS = ("Row1.DriverSide", "Row1.PassengerSide", "Row2.DriverSide", "Row2.PassengerSide")
BAT = "Vehicle.Powertrain.TractionBattery"
CHG = f"{BAT}.Charging"


@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleConfig:
    vin: str = "WVTSIM00000000001"
    powertrain: str = "BEV"          # BEV or ICE
    battery_kwh: float = 77.0
    consumption_kwh_per_km: float = 0.17
    firmware_version: str = "2025.10.1"
    home: str = "home"

    def __post_init__(self) -> None:
        if len(self.vin) != 17:
            raise ValueError(f"vin must have 17 characters, got {self.vin!r}")
        if self.powertrain not in ("BEV", "ICE"):
            raise ValueError(f"powertrain must be BEV or ICE, got {self.powertrain!r}")
        if self.home not in PLACES:
            raise ValueError(f"home must be one of {sorted(PLACES)}, got {self.home!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteCommand:
    """One command as it reaches the TCU from a backend."""

    name: str                              # tcu.door_unlock, tcu.locate, ...
    args: dict[str, Any] = field(default_factory=dict)
    principal: str = "owner-app"
    role: str = "owner"                    # owner, provider, dealer, employee, roadside, fleet_admin
    channel: str = "app"                   # app, oem_cloud, dealer_portal
    auth: str = "oauth"
    kid: str | None = None                 # credential id (token or virtual key)
    net: str | None = None
    token: dict[str, Any] | None = None    # claims: aud, scope, iat, exp (seconds)
    nonce: str | None = None
    sent_ms: int | None = None             # backend's timestamp
    signature: bytes | None = None
    signed_payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    status: str          # ok, rejected, deferred, failed
    verdict: Verdict
    data: dict[str, Any] = field(default_factory=dict)


class VehicleModel:
    def __init__(self, config: VehicleConfig = VehicleConfig(), *, link: DeviceLink,
                 virtual_keys: dict[str, Any] | None = None) -> None:
        self.config = config
        self.vin = config.vin
        self.link = link
        self.virtual_keys = dict(virtual_keys or {})  # kid -> Ed25519 public key (cryptography)
        lat, lon, _ = PLACES[config.home]
        self.s: dict[str, Any] = {
            "Vehicle.Speed": 0.0, "Vehicle.IsMoving": False,
            "Vehicle.Powertrain.Transmission.SelectedGear": GEAR_P,
            "Vehicle.Powertrain.Transmission.IsParkLockEngaged": True,
            "Vehicle.LowVoltageSystemState": "LOCK",
            "Vehicle.Powertrain.CombustionEngine.IsRunning": False,
            "Vehicle.Body.Trunk.Rear.IsOpen": False,
            "Vehicle.Body.Horn.IsActive": False,
            "Vehicle.Body.Lights.Hazard.IsSignaling": False,
            "Vehicle.Cabin.HVAC.IsAirConditioningActive": False,
            "Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied": False,
            "Vehicle.CurrentLocation.Latitude": lat, "Vehicle.CurrentLocation.Longitude": lon,
            f"{BAT}.StateOfCharge.Current": 62.0,
            f"{CHG}.IsCharging": False, f"{CHG}.IsChargingCableConnected": False,
            f"{CHG}.ChargingPort.AnyPosition.IsChargingCableLocked": False,
            f"{CHG}.ChargeLimit": 80, "Vehicle.Private.Charging.PowerKw": 0.0,
            "Vehicle.LowVoltageBattery.CurrentVoltage": 12.6,
            "Vehicle.Private.Key.IsPresent": False,
            "Vehicle.Private.ServiceMode.IsActive": False,
            "Vehicle.Private.Binding.Consent": False,
            "Vehicle.Private.Access.LastLocalAction": "",
            "Vehicle.Private.Software.RXSWIN": config.firmware_version,
        }
        for d in DOORS:
            self.s[f"Vehicle.Cabin.Door.{d}.IsLocked"] = True
            self.s[f"Vehicle.Cabin.Door.{d}.IsOpen"] = False
        self.target: tuple[float, float] | None = None
        self.target_speed = 0.0
        self.charge_target = 80.0
        self.bindings: dict[str, int] = {}       # principal -> wall ms bound
        self._published: dict[str, Any] = {}
        self.dropped: dict[str, int] = {}

    # -- derived -------------------------------------------------------------------------
    @property
    def location(self) -> tuple[float, float]:
        return self.s["Vehicle.CurrentLocation.Latitude"], self.s["Vehicle.CurrentLocation.Longitude"]

    def geofence(self) -> str:
        lat, lon = self.location
        for name in GEOFENCE_ORDER:
            plat, plon, radius = PLACES[name]
            if _km(lat, lon, plat, plon) <= radius:
                return name
        return ""

    def twin(self) -> dict[str, Any]:
        s = self.s
        return {
            "vehicle.speed": round(s["Vehicle.Speed"], 1), "vehicle.is_moving": s["Vehicle.IsMoving"],
            "vehicle.gear": _GEAR_LETTER.get(s["Vehicle.Powertrain.Transmission.SelectedGear"], "D"),
            "vehicle.lv_state": s["Vehicle.LowVoltageSystemState"],
            "vehicle.engine_running": s["Vehicle.Powertrain.CombustionEngine.IsRunning"],
            "vehicle.key_present": s["Vehicle.Private.Key.IsPresent"],
            "vehicle.occupied": s["Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied"],
            "vehicle.geofence": self.geofence(),
            "vehicle.location.lat": round(self.location[0], 5), "vehicle.location.lon": round(self.location[1], 5),
            "vehicle.doors_locked": all(s[f"Vehicle.Cabin.Door.{d}.IsLocked"] for d in DOORS),
            "battery.soc": round(s[f"{BAT}.StateOfCharge.Current"], 1),
            "battery.lv_voltage": s["Vehicle.LowVoltageBattery.CurrentVoltage"],
            "charging.is_charging": s[f"{CHG}.IsCharging"],
            "charging.power_kw": s["Vehicle.Private.Charging.PowerKw"],
            "charging.cable_locked": s[f"{CHG}.ChargingPort.AnyPosition.IsChargingCableLocked"],
            "access.local_action": s["Vehicle.Private.Access.LastLocalAction"],
            "service.mode": s["Vehicle.Private.ServiceMode.IsActive"],
            "binding.consent": s["Vehicle.Private.Binding.Consent"],
            "firmware.rxswin": s["Vehicle.Private.Software.RXSWIN"],
        }

    def publish(self) -> None:
        """Send measured values always (their age is their freshness) and other values only
        when they change (their age is the time since the event, e.g. a local lock)."""
        state = self.twin()
        last = self._published
        out = {k: v for k, v in state.items() if k in MEASURED or last.get(k, _UNSET) != v}
        self._published = state
        if out:
            self.link.update(**out)

    # -- dynamics ------------------------------------------------------------------------
    def enter(self, *, with_key: bool = True) -> None:
        self.s["Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied"] = True
        self.s["Vehicle.Private.Key.IsPresent"] = with_key
        self.publish()

    def leave(self) -> None:
        self.park()
        self.s["Vehicle.Cabin.Seat.Row1.DriverSide.IsOccupied"] = False
        self.s["Vehicle.Private.Key.IsPresent"] = False
        self.s["Vehicle.LowVoltageSystemState"] = "OFF"
        self.publish()

    def local(self, action: str, by: str = "fob") -> None:
        """A local access action (fob, handle, BLE phone key): lock or unlock."""
        locked = action == "lock"
        for d in DOORS:
            self.s[f"Vehicle.Cabin.Door.{d}.IsLocked"] = locked
        self.s["Vehicle.Private.Access.LastLocalAction"] = action
        self.link.record(f"tcu.event.local_{action}", src={"id": by, "auth": "local"}, sub=self.vin, st="ok")
        self.publish()

    def consent(self, given: bool = True) -> None:
        """The driver confirms (in the car) a pending binding/pairing."""
        self.s["Vehicle.Private.Binding.Consent"] = given
        self.link.record("tcu.event.binding_consent", src={"id": "hmi", "auth": "local"}, sub=self.vin,
                         st="given" if given else "withdrawn")
        self.publish()

    def service_mode(self, on: bool) -> None:
        self.s["Vehicle.Private.ServiceMode.IsActive"] = on
        self.link.record("tcu.event.service_mode", src={"id": "hmi", "auth": "local"}, sub=self.vin,
                         st="on" if on else "off")
        self.publish()

    def drive_to(self, place: str, speed_kmh: float = 50.0) -> None:
        if place not in PLACES:
            raise KeyError(f"unknown place {place!r}")
        if self.s[f"{CHG}.IsCharging"] or self.s[f"{CHG}.IsChargingCableConnected"]:
            self.unplug()
        lat, lon, _ = PLACES[place]
        self.target, self.target_speed = (lat, lon), speed_kmh
        self.s["Vehicle.LowVoltageSystemState"] = "ON"
        self.s["Vehicle.Powertrain.Transmission.SelectedGear"] = GEAR_D
        self.s["Vehicle.Powertrain.Transmission.IsParkLockEngaged"] = False
        if self.config.powertrain == "ICE":
            self.s["Vehicle.Powertrain.CombustionEngine.IsRunning"] = True

    def park(self) -> None:
        self.target = None
        self.s.update({"Vehicle.Speed": 0.0, "Vehicle.IsMoving": False,
                       "Vehicle.Powertrain.Transmission.SelectedGear": GEAR_P,
                       "Vehicle.Powertrain.Transmission.IsParkLockEngaged": True,
                       "Vehicle.Powertrain.CombustionEngine.IsRunning": False})

    def plug_in(self, power_kw: float = 11.0, target_soc: float = 80.0) -> None:
        self.park()
        self.s[f"{CHG}.IsChargingCableConnected"] = True
        self.s[f"{CHG}.ChargingPort.AnyPosition.IsChargingCableLocked"] = True
        self.charge_target = target_soc
        self._set_charging(self.s[f"{BAT}.StateOfCharge.Current"] < target_soc, power_kw)

    def unplug(self) -> None:
        self._set_charging(False, 0.0)
        self.s[f"{CHG}.IsChargingCableConnected"] = False
        self.s[f"{CHG}.ChargingPort.AnyPosition.IsChargingCableLocked"] = False

    def _set_charging(self, on: bool, power_kw: float) -> None:
        self.s[f"{CHG}.IsCharging"] = on
        self.s["Vehicle.Private.Charging.PowerKw"] = power_kw if on else 0.0

    @property
    def arrived(self) -> bool:
        return self.target is None

    def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass: move, use or gain energy."""
        s = self.s
        if self.target is not None:
            lat, lon = self.location
            dist = _km(lat, lon, *self.target)
            step = self.target_speed * seconds / 3600.0
            if step >= dist:
                s["Vehicle.CurrentLocation.Latitude"], s["Vehicle.CurrentLocation.Longitude"] = self.target
                used = dist
                self.park()
            else:
                f = step / dist
                s["Vehicle.CurrentLocation.Latitude"] = lat + (self.target[0] - lat) * f
                s["Vehicle.CurrentLocation.Longitude"] = lon + (self.target[1] - lon) * f
                s["Vehicle.Speed"], s["Vehicle.IsMoving"] = self.target_speed, True
                used = step
            soc = s[f"{BAT}.StateOfCharge.Current"] - used * self.config.consumption_kwh_per_km / self.config.battery_kwh * 100
            s[f"{BAT}.StateOfCharge.Current"] = max(0.0, soc)
        elif s[f"{CHG}.IsCharging"]:
            kw = s["Vehicle.Private.Charging.PowerKw"]
            soc = s[f"{BAT}.StateOfCharge.Current"] + kw * seconds / 3600.0 / self.config.battery_kwh * 100
            s[f"{BAT}.StateOfCharge.Current"] = min(soc, self.charge_target)
            if soc >= self.charge_target:
                self._set_charging(False, 0.0)
        self.publish()

    # -- remote commands -----------------------------------------------------------------
    def signature_ok(self, cmd: RemoteCommand) -> bool | None:
        """True/False when signed (Tesla-style virtual key); None when the command carries no signature."""
        if cmd.signature is None:
            return None
        key = self.virtual_keys.get(cmd.kid or "")
        if key is None or cmd.signed_payload is None:
            return False
        from cryptography.exceptions import InvalidSignature
        try:
            key.verify(cmd.signature, cmd.signed_payload)
        except InvalidSignature:
            return False
        return True

    async def execute(self, cmd: RemoteCommand, now_ms: int) -> CommandResult:
        self.publish()    # the agent judges against fresh readings
        src: dict[str, Any] = {"id": cmd.principal, "auth": cmd.auth, "role": cmd.role, "channel": cmd.channel}
        if cmd.kid:
            src["kid"] = cmd.kid
        if cmd.net:
            src["net"] = cmd.net
        if cmd.token is not None:
            src["token"] = dict(cmd.token)   # claims, never the token itself
        sig = self.signature_ok(cmd)
        if sig is not None:
            src["sig"] = "valid" if sig else "invalid"
        if cmd.nonce is not None:
            src["nonce"] = cmd.nonce
        if cmd.sent_ms is not None:
            src["ts"] = cmd.sent_ms
        args = dict(cmd.args)
        verdict = self.link.check(cmd.name, args, src, self.vin)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict.refused:
            return CommandResult("deferred" if verdict.v == "defer" else "rejected", verdict)
        if sig is False:
            return CommandResult("rejected", verdict, {"reason": "bad_signature"})
        data = self._apply(cmd, now_ms)
        self.publish()
        return CommandResult("ok" if data is not None else "failed", verdict, data or {})

    def _apply(self, cmd: RemoteCommand, now_ms: int) -> dict[str, Any] | None:
        s, name, a = self.s, cmd.name.removeprefix("tcu."), cmd.args
        if name in ("door_unlock", "door_lock"):
            for d in DOORS:
                s[f"Vehicle.Cabin.Door.{d}.IsLocked"] = name == "door_lock"
        elif name == "trunk_open":
            s["Vehicle.Body.Trunk.Rear.IsOpen"] = True
        elif name in ("honk", "flash_lights"):
            return {"done": name}
        elif name == "climate":
            s["Vehicle.Cabin.HVAC.IsAirConditioningActive"] = bool(a.get("on", True))
        elif name == "remote_start":
            if s["Vehicle.IsMoving"]:
                return None
            s["Vehicle.LowVoltageSystemState"] = "START" if self.config.powertrain == "ICE" else "ON"
            s["Vehicle.Powertrain.CombustionEngine.IsRunning"] = self.config.powertrain == "ICE"
        elif name in ("immobilise", "engine_stop"):
            if s["Vehicle.IsMoving"]:
                return None     # never immobilise a moving vehicle
            s["Vehicle.LowVoltageSystemState"] = "LOCK"
            s["Vehicle.Powertrain.CombustionEngine.IsRunning"] = False
        elif name in ("locate", "location_history"):
            lat, lon = self.location
            return {"lat": round(lat, 5), "lon": round(lon, 5)}
        elif name == "charge_start":
            if not s[f"{CHG}.IsChargingCableConnected"]:
                return None
            self._set_charging(True, float(a.get("power_kw", 11.0)))
        elif name == "charge_stop":
            self._set_charging(False, 0.0)
        elif name == "charge_limit":
            s[f"{CHG}.ChargeLimit"] = int(a.get("percent", 80))
            self.charge_target = float(s[f"{CHG}.ChargeLimit"])
        elif name == "charge_port_unlock":
            if s[f"{CHG}.IsCharging"]:
                self._set_charging(False, 0.0)
            s[f"{CHG}.ChargingPort.AnyPosition.IsChargingCableLocked"] = False
        elif name in ("bind_owner", "add_key", "add_user"):
            self.bindings[str(a.get("principal", cmd.principal))] = now_ms
            s["Vehicle.Private.Binding.Consent"] = False
        elif name == "ota_update":
            if s["Vehicle.IsMoving"]:
                return None
            s["Vehicle.Private.Software.RXSWIN"] = str(a.get("version", s["Vehicle.Private.Software.RXSWIN"]))
        elif name in ("valet_mode", "pin_to_drive", "plate_mode", "speed_limit", "pin_verify", "window_open",
                      "camera", "emergency_unlock", "hazard_lights", "immobilise_cancel", "ecall"):
            return {"done": name}
        else:
            return None
        return {"done": name}


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dy = (lat2 - lat1) * KMH_PER_DEG
    dx = (lon2 - lon1) * KMH_PER_DEG * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(dx, dy)
