"""The one list of operation names the rules know (documented in agent/rules/README.md).

Charger commands are ``ocpp.<Action>`` with the OCPP action name exactly as on the wire
(1.6J and 2.0.1 names side by side); TCU commands are ``tcu.<name>``. Local events the
agent may also show the engine (``Engine.observe``) are ``ocpp.SecurityEventNotification``
(``args.type`` = the OCPP security event) and ``tcu.event.<name>``. Twin updates are
judged as the pseudo-operation ``twin.update`` (``args`` = the update map).

An unknown name is still judged (rules match on globs), it just has no class here.
``refusal`` is the protocol's own answer when the command is blocked, for the shim's
guard; ``never_refuse`` marks safety paths that no rule, pack or bundle can block or defer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    name: str
    device_class: str      # "charger" | "tcu"
    klass: str             # access, propulsion, location, charging, nuisance, identity, ota, config, ...
    sensitivity: str       # low, medium, high, critical
    refusal: str = "Rejected"
    never_refuse: bool = False


def _c(name: str, device_class: str, klass: str, sensitivity: str, refusal: str = "Rejected",
       never_refuse: bool = False) -> Command:
    return Command(name=name, device_class=device_class, klass=klass, sensitivity=sensitivity,
                   refusal=refusal, never_refuse=never_refuse)


_CHARGER = [
    # name, class, sensitivity, refusal
    ("RemoteStartTransaction", "transaction", "high", "Rejected"),           # 1.6J
    ("RequestStartTransaction", "transaction", "high", "Rejected"),          # 2.0.1
    ("UnlockConnector", "access", "high", "OngoingAuthorizedTransaction"),   # 1.6J answers UnlockFailed
    ("Reset", "availability", "high", "Scheduled"),
    ("ChangeConfiguration", "config", "critical", "Rejected"),               # 1.6J
    ("SetVariables", "config", "critical", "Rejected"),                      # 2.0.1
    ("SetNetworkProfile", "config", "critical", "Rejected"),
    ("UpdateFirmware", "firmware", "critical", "Rejected"),
    ("SignedUpdateFirmware", "firmware", "critical", "Rejected"),
    ("GetDiagnostics", "logs", "medium", "Rejected"),
    ("GetLog", "logs", "medium", "Rejected"),
    ("SetChargingProfile", "energy", "high", "Rejected"),
    ("ClearChargingProfile", "energy", "high", "Rejected"),
    ("InstallCertificate", "trust", "critical", "Rejected"),
    ("DeleteCertificate", "trust", "critical", "Failed"),
    ("CertificateSigned", "trust", "critical", "Rejected"),
    ("SendLocalList", "authorization", "high", "Failed"),
    ("ClearCache", "authorization", "high", "Rejected"),
    ("ChangeAvailability", "availability", "medium", "Scheduled"),
    ("ReserveNow", "availability", "medium", "Rejected"),
    ("CancelReservation", "availability", "low", "Rejected"),
    ("TriggerMessage", "trigger", "low", "Rejected"),
    ("ExtendedTriggerMessage", "trigger", "low", "Rejected"),
    ("DataTransfer", "vendor", "high", "UnknownVendorId"),
    ("SetDisplayMessage", "display", "medium", "Rejected"),
    ("CustomerInformation", "privacy", "medium", "Rejected"),
    ("SetMonitoringLevel", "monitoring", "medium", "Rejected"),
    ("SetVariableMonitoring", "monitoring", "medium", "Rejected"),
    ("ClearVariableMonitoring", "monitoring", "medium", "Rejected"),
    ("GetConfiguration", "recon", "low", "Rejected"),
    ("GetVariables", "recon", "low", "Rejected"),
    ("GetBaseReport", "recon", "low", "Rejected"),
    ("GetReport", "recon", "low", "Rejected"),
    ("GetInstalledCertificateIds", "recon", "low", "Rejected"),
    ("GetLocalListVersion", "recon", "low", "Rejected"),
    ("GetCompositeSchedule", "recon", "low", "Rejected"),
]
_CHARGER_NEVER_REFUSE = [
    # stopping energy flow is the safe direction
    ("RemoteStopTransaction", "transaction", "medium"),
    ("RequestStopTransaction", "transaction", "medium"),
]
_TCU = [
    ("door_unlock", "access", "high"), ("door_lock", "access", "medium"),
    ("trunk_open", "access", "high"), ("window_open", "access", "high"),
    ("remote_start", "propulsion", "critical"), ("immobilise", "propulsion", "critical"),
    ("engine_stop", "propulsion", "critical"), ("speed_limit", "propulsion", "critical"),
    ("valet_mode", "mode", "critical"), ("pin_to_drive", "mode", "critical"),
    ("plate_mode", "mode", "critical"),
    ("locate", "location", "high"), ("location_history", "location", "high"),
    ("camera", "location", "high"),
    ("charge_start", "charging", "medium"), ("charge_stop", "charging", "medium"),
    ("charge_limit", "charging", "medium"), ("charge_port_unlock", "charging", "high"),
    ("honk", "nuisance", "low"), ("flash_lights", "nuisance", "low"), ("climate", "nuisance", "low"),
    ("bind_owner", "identity", "critical"), ("add_key", "identity", "critical"),
    ("add_user", "identity", "critical"),
    ("ota_update", "ota", "critical"), ("pin_verify", "identity", "high"),
]
_TCU_NEVER_REFUSE = [
    # emergency and release paths: refusing them could trap people or keep a car immobilised
    ("ecall", "safety", "critical"), ("emergency_unlock", "safety", "critical"),
    ("hazard_lights", "safety", "low"), ("immobilise_cancel", "safety", "critical"),
]

COMMANDS: dict[str, Command] = {}
for _n, _k, _s, _r in _CHARGER:
    COMMANDS[f"ocpp.{_n}"] = _c(f"ocpp.{_n}", "charger", _k, _s, _r)
for _n, _k, _s in _CHARGER_NEVER_REFUSE:
    COMMANDS[f"ocpp.{_n}"] = _c(f"ocpp.{_n}", "charger", _k, _s, never_refuse=True)
for _n, _k, _s in _TCU:
    COMMANDS[f"tcu.{_n}"] = _c(f"tcu.{_n}", "tcu", _k, _s)
for _n, _k, _s in _TCU_NEVER_REFUSE:
    COMMANDS[f"tcu.{_n}"] = _c(f"tcu.{_n}", "tcu", _k, _s, never_refuse=True)

#: operations that are observed (events), never remote commands
EVENTS = ("ocpp.SecurityEventNotification", "tcu.event.*", "twin.update")

NEVER_REFUSE: frozenset[str] = frozenset(n for n, c in COMMANDS.items() if c.never_refuse)


def command_class(name: str) -> str | None:
    c = COMMANDS.get(name)
    return c.klass if c else None


def refusal_for(name: str) -> str:
    c = COMMANDS.get(name)
    return c.refusal if c else "Rejected"
