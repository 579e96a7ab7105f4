"""A charging station, as state and rules of physics: no sockets, no clock reads.

Connectors follow the OCPP status machine (Available → Preparing → Charging ⇄ SuspendedEV/
SuspendedEVSE → Finishing → Available; Unavailable, Reserved, Faulted), with the IEC 61851
control-pilot state (A unplugged, B plugged, C charging), a cable lock, an energy meter and
a current that follows the EV's demand under the charging-profile limit. Transactions,
firmware version and its install state, the OCPP security profile, configuration keys,
the local authorisation list and the tamper switch are here too.

Everything the outside world should hear about (status changes, transaction start/stop,
meter values, security events, firmware status) goes to ``outbox`` as ``Event`` items; the
OCPP adapter (``charger_ocpp.py``) drains it and sends the matching OCPP messages. Every
change the agent's twin should see goes through ``twin()`` (keys of agent/twin.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

VOLTS = 230.0
PHASES = 3
STATUSES = ("Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing",
            "Reserved", "Unavailable", "Faulted")

# 1.6J names; the 2.0.1 adapter maps component/variable pairs onto them (charger_ocpp.VARIABLE_KEYS).
DEFAULT_CONFIG: dict[str, str] = {
    "HeartbeatInterval": "300",
    "MeterValueSampleInterval": "60",
    "SecurityProfile": "2",
    "AuthorizeRemoteTxRequests": "true",
    "AllowOfflineTxForUnknownId": "false",
    "LocalAuthorizeOffline": "true",
    "LocalAuthListEnabled": "true",
    "ConnectionTimeOut": "60",
    "RandomisedDelayMaxSeconds": "600",
    "UnlockConnectorOnEVSideDisconnect": "true",
}
READ_ONLY_KEYS = frozenset({"SecurityProfile"})  # changed only through the profile procedure


@dataclass(frozen=True, slots=True)
class Event:
    kind: str                  # status, tx_started, tx_stopped, meter, security, firmware, boot
    data: dict[str, Any]


@dataclass(slots=True)
class Connector:
    id: int
    status: str = "Available"
    cp_state: str = "A"
    cable_locked: bool = False
    current_a: float = 0.0
    ev_demand_a: float = 0.0       # what the plugged EV would draw if allowed
    limit_a: float | None = None   # charging-profile limit
    energy_wh: float = 0.0         # meter register, never goes back
    tx_id: int | None = None
    id_tag: str | None = None
    reserved_for: str | None = None
    available: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerConfig:
    charger_id: str = "CP01"
    connectors: int = 2
    fuse_a: float = 32.0
    vendor: str = "Veritrail-Sim"
    model: str = "VS-22"
    firmware_version: str = "1.4.2"
    security_profile: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.connectors <= 8:
            raise ValueError(f"connectors must be 1..8, got {self.connectors!r}")
        if not self.fuse_a > 0:
            raise ValueError(f"fuse_a must be > 0, got {self.fuse_a!r}")
        if self.security_profile not in (0, 1, 2, 3):
            raise ValueError(f"security_profile must be 0..3, got {self.security_profile!r}")


class ChargerModel:
    def __init__(self, config: ChargerConfig = ChargerConfig()) -> None:
        self.config = config
        self.id = config.charger_id
        self.connectors = {i: Connector(i) for i in range(1, config.connectors + 1)}
        self.firmware_version = config.firmware_version
        self.firmware_state = "Idle"      # Idle, Downloading, Downloaded, Installing, Installed, ...
        self.pending_firmware: dict[str, Any] | None = None
        self.security_profile = config.security_profile
        self.configuration = dict(DEFAULT_CONFIG, SecurityProfile=str(config.security_profile))
        self.local_list: dict[str, str] = {}
        self.local_list_version = 0
        self.tamper_open = False
        self.maintenance = False
        self.owner_override = False   # the user asked for "charge now" (UK smart-charging override)
        self.wan_up = True
        self.boots = 0
        self._next_tx = 1000
        self.outbox: deque[Event] = deque(maxlen=4096)  # oldest dropped first; counted below
        self.outbox_dropped = 0
        self.on_emit: Callable[[], None] | None = None   # the session's wake-up for its outbox pump

    # -- helpers -----------------------------------------------------------------------
    def _emit(self, kind: str, **data: Any) -> None:
        if len(self.outbox) == self.outbox.maxlen:
            self.outbox_dropped += 1
        self.outbox.append(Event(kind, data))
        if self.on_emit is not None:
            self.on_emit()

    def connector(self, connector_id: int) -> Connector:
        c = self.connectors.get(connector_id)
        if c is None:
            raise KeyError(f"no connector {connector_id} on {self.id}")
        return c

    def _set_status(self, c: Connector, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown connector status {status!r}")
        if c.status != status:
            c.status = status
            self._emit("status", connector_id=c.id, status=status)

    def tx_connector(self, tx_id: int) -> Connector | None:
        return next((c for c in self.connectors.values() if c.tx_id == tx_id), None)

    @property
    def active_tx(self) -> list[int]:
        return [c.tx_id for c in self.connectors.values() if c.tx_id is not None]

    # -- physical side -----------------------------------------------------------------
    def boot(self) -> None:
        self.boots += 1
        self._emit("boot", reason="PowerUp" if self.boots == 1 else "ApplicationReset")
        for c in self.connectors.values():
            self._emit("status", connector_id=c.id, status=c.status)

    def plug_in(self, connector_id: int, ev_demand_a: float = 32.0) -> None:
        c = self.connector(connector_id)
        c.cp_state, c.ev_demand_a = "B", ev_demand_a
        c.cable_locked = True
        if c.status in ("Available", "Reserved"):
            self._set_status(c, "Preparing")

    def unplug(self, connector_id: int) -> None:
        c = self.connector(connector_id)
        if c.tx_id is not None:
            self.stop_transaction(c.tx_id, reason="EVDisconnected")
        c.cp_state, c.current_a, c.ev_demand_a, c.cable_locked = "A", 0.0, 0.0, False
        self._set_status(c, "Available" if c.available else "Unavailable")

    def ev_full(self, connector_id: int) -> None:
        c = self.connector(connector_id)
        c.ev_demand_a = 0.0
        if c.tx_id is not None:
            c.current_a, c.cp_state = 0.0, "B"
            self._set_status(c, "SuspendedEV")

    def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass: current follows demand and limit, the meter counts energy."""
        for c in self.connectors.values():
            if c.tx_id is None or c.cp_state == "A":
                c.current_a = 0.0
                continue
            allowed = min(c.ev_demand_a, self.config.fuse_a, c.limit_a if c.limit_a is not None else 1e9)
            c.current_a = max(0.0, allowed)
            if c.current_a > 0:
                c.cp_state = "C"
                self._set_status(c, "Charging")
            elif c.status == "Charging":
                self._set_status(c, "SuspendedEVSE" if c.ev_demand_a > 0 else "SuspendedEV")
            c.energy_wh += c.current_a * VOLTS * PHASES * seconds / 3600.0

    def meter_sample(self, connector_id: int) -> None:
        c = self.connector(connector_id)
        self._emit("meter", connector_id=c.id, tx_id=c.tx_id, energy_wh=round(c.energy_wh, 1),
                   current_a=round(c.current_a, 2))

    def set_tamper(self, open_: bool) -> None:
        if open_ and not self.tamper_open:
            self._emit("security", type="TamperDetectionActivated", info="enclosure lid opened")
        self.tamper_open = open_

    def security_event(self, type_: str, info: str = "") -> None:
        self._emit("security", type=type_, info=info)

    # -- transactions ------------------------------------------------------------------
    def start_transaction(self, connector_id: int, id_tag: str) -> int:
        c = self.connector(connector_id)
        if c.tx_id is not None:
            raise ValueError(f"connector {connector_id} already has transaction {c.tx_id}")
        self._next_tx += 1
        c.tx_id, c.id_tag, c.reserved_for = self._next_tx, id_tag, None
        self._emit("tx_started", connector_id=c.id, tx_id=c.tx_id, id_tag=id_tag,
                   meter_start_wh=int(c.energy_wh))
        if c.cp_state == "B":
            self.tick(0)
        return c.tx_id

    def stop_transaction(self, tx_id: int, reason: str = "Local") -> bool:
        c = self.tx_connector(tx_id)
        if c is None:
            return False
        c.current_a = 0.0
        self._emit("tx_stopped", connector_id=c.id, tx_id=tx_id, id_tag=c.id_tag, reason=reason,
                   meter_stop_wh=int(c.energy_wh))
        c.tx_id, c.id_tag, c.limit_a = None, None, None
        if not self.active_tx:
            self.owner_override = False
        if c.cp_state != "A":
            c.cp_state = "B"
            self._set_status(c, "Finishing")
        else:
            self._set_status(c, "Available")
        return True

    # -- CSMS-side operations (what the OCPP handlers call after the guard allowed them) --
    def can_start(self, connector_id: int | None) -> int | None:
        """The connector a remote start would use, or None if none can start."""
        ids = [connector_id] if connector_id else list(self.connectors)
        for i in ids:
            c = self.connectors.get(i)
            if c is not None and c.tx_id is None and c.available and c.status != "Faulted":
                return i
        return None

    def unlock(self, connector_id: int) -> str:
        """1.6 UnlockStatus-like result: Unlocked, UnlockFailed, OngoingAuthorizedTransaction."""
        c = self.connector(connector_id)
        if c.tx_id is not None and c.current_a > 0:
            return "OngoingAuthorizedTransaction"   # libocpp's answer during energy transfer
        if c.tx_id is not None:
            self.stop_transaction(c.tx_id, reason="UnlockCommand")
        c.cable_locked = False
        return "Unlocked"

    def reset(self, kind: str) -> str:
        hard = kind in ("Hard", "Immediate")
        for tx in list(self.active_tx):
            if hard:
                self.stop_transaction(tx, reason="HardReset")
        if not hard and self.active_tx:
            return "Scheduled"
        self.security_event("ResetOrReboot", f"{kind} reset")
        self.boot()
        self.security_event("StartupOfTheDevice", "")
        return "Accepted"

    def change_configuration(self, key: str, value: str) -> str:
        if key in READ_ONLY_KEYS:
            return self.set_security_profile(int(value)) if value.isdigit() else "Rejected"
        if key not in self.configuration and not key.startswith("Vendor"):
            return "NotSupported"
        self.configuration[key] = value
        if key in ("AuthorizationKey", "BasicAuthPassword", "AllowOfflineTxForUnknownId",
                   "AuthorizeRemoteTxRequests", "LocalAuthorizeOffline"):
            self.security_event("ReconfigurationOfSecurityParameters", key)
        return "Accepted"

    def set_security_profile(self, profile: int) -> str:
        if profile <= self.security_profile or profile > 3:
            return "Rejected"       # libocpp: never lower, never equal
        self.security_profile = profile
        self.configuration["SecurityProfile"] = str(profile)
        self.security_event("ReconfigurationOfSecurityParameters", "SecurityProfile")
        return "Accepted"

    def set_limit(self, connector_id: int, limit_a: float | None) -> str:
        targets = [self.connector(connector_id)] if connector_id else list(self.connectors.values())
        for c in targets:
            c.limit_a = None if limit_a is None else min(limit_a, self.config.fuse_a)
        self.tick(0)
        return "Accepted"

    def availability(self, connector_id: int, operative: bool) -> str:
        targets = [self.connector(connector_id)] if connector_id else list(self.connectors.values())
        scheduled = False
        for c in targets:
            c.available = operative
            if c.tx_id is not None and not operative:
                scheduled = True
                continue
            if c.cp_state == "A" or operative:
                self._set_status(c, ("Available" if c.cp_state == "A" else "Preparing") if operative
                                 else "Unavailable")
        return "Scheduled" if scheduled else "Accepted"

    def schedule_firmware(self, location: str, version: str | None = None, signed: bool = False) -> None:
        self.pending_firmware = {"location": location, "version": version, "signed": signed}
        self.firmware_state = "Downloading"
        self._emit("firmware", status="Downloading")

    def advance_firmware(self) -> str:
        """Next step of a pending firmware update; installs only when no transaction is active."""
        fw = self.pending_firmware
        if fw is None:
            return self.firmware_state
        steps = {"Downloading": "Downloaded", "Downloaded": "Installing", "Installing": "Installed"}
        if self.firmware_state == "Downloaded" and self.active_tx:
            return self.firmware_state   # wait for idle
        nxt = steps.get(self.firmware_state, "Idle")
        self.firmware_state = nxt
        self._emit("firmware", status=nxt)
        if nxt == "Installed":
            if fw.get("version"):
                self.firmware_version = str(fw["version"])
            self.pending_firmware = None
            self.security_event("FirmwareUpdated", self.firmware_version)
            self.firmware_state = "Idle"
        return nxt

    def send_local_list(self, entries: dict[str, str], version: int, full: bool) -> str:
        if full:
            self.local_list = dict(entries)
        else:
            self.local_list.update(entries)
        self.local_list_version = version
        return "Accepted"

    # -- twin ----------------------------------------------------------------------------
    def twin(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "tx.active": bool(self.active_tx),
            "tx.ids": self.active_tx,
            "security.profile": self.security_profile,
            "firmware.version": self.firmware_version,
            "net.wan_up": self.wan_up,
            "charger.maintenance": self.maintenance,
            "charger.owner_override": self.owner_override,
            "charger.local_list_size": len(self.local_list),
        }
        for c in self.connectors.values():
            state[f"connector.{c.id}.status"] = c.status
            state[f"connector.{c.id}.cp_state"] = c.cp_state
            state[f"connector.{c.id}.current_a"] = round(c.current_a, 2)
        return state
