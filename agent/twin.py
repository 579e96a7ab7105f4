"""The device twin: live state from the shim's ``update()`` frames, each value with its time.

Keys are COVESA-VSS-ish dotted names (full list with units in agent/rules/README.md).
Some keys are *safety* keys: each has an unsafe value and, for measured values, a
staleness limit. Reading a safety key that was never reported, or whose reading is older
than its limit, gives the unsafe value (moving, current flowing, transaction active), so a
rule that forgets staleness still fails safe. ``raw()`` gives the last value as reported.

Pure: no clock reads (``now_ms`` is passed in), no I/O. Bad updates are dropped and counted
by reason in ``dropped``.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

INF = math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    pattern: str
    unit: str = ""
    unsafe: Any = None            # value reported when stale or never seen (None: not a safety key)
    staleness_ms: int | None = None  # None: event-driven, never goes stale once reported
    doc: str = ""

    @property
    def safety(self) -> bool:
        return self.unsafe is not None


def _k(pattern: str, unit: str = "", unsafe: Any = None, staleness_ms: int | None = None, doc: str = "") -> KeySpec:
    return KeySpec(pattern=pattern, unit=unit, unsafe=unsafe, staleness_ms=staleness_ms, doc=doc)


SAFETY_STALENESS_MS = 2_000  # RULES_CATALOG §4.6

KEYS: tuple[KeySpec, ...] = (
    # charger
    _k("connector.*.status", "", "Charging", None, "OCPP connector status (Available, Preparing, Charging, SuspendedEV, Finishing, Faulted, ...)"),
    _k("connector.*.cp_state", "", "C", None, "IEC 61851 control-pilot state A..F"),
    _k("connector.*.current_a", "A", INF, SAFETY_STALENESS_MS, "current flowing on the connector"),
    _k("tx.active", "", True, None, "a charging transaction is active"),
    _k("tx.ids", "", None, None, "list of transaction ids the charger knows"),
    _k("security.profile", "", None, None, "OCPP security profile in force (1..3)"),
    _k("firmware.version", "", None, None, "installed firmware version"),
    _k("net.wan_up", "", None, None, "WAN link to the CSMS is up"),
    _k("charger.maintenance", "", None, None, "a maintenance ticket/window is open"),
    _k("charger.local_list_size", "", None, None, "entries in the local authorisation list"),
    # vehicle
    _k("vehicle.speed", "km/h", INF, SAFETY_STALENESS_MS, "Vehicle.Speed"),
    _k("vehicle.is_moving", "", True, SAFETY_STALENESS_MS, "Vehicle.IsMoving"),
    _k("vehicle.gear", "", "D", None, "Powertrain.Transmission.SelectedGear as P/R/N/D"),
    _k("vehicle.lv_state", "", "ON", None, "Vehicle.LowVoltageSystemState LOCK/OFF/ACC/ON/START"),
    _k("vehicle.engine_running", "", True, None, "CombustionEngine.IsRunning"),
    _k("vehicle.key_present", "", None, None, "a physical key/phone key is in the car"),
    _k("vehicle.occupied", "", True, None, "Cabin.Seat.Row1.DriverSide.OccupancyStatus"),
    _k("vehicle.geofence", "", None, None, "named zone the car is in: home, garage, dealer, ... ('' = none)"),
    _k("vehicle.location.lat", "deg", None, None, "CurrentLocation.Latitude"),
    _k("vehicle.location.lon", "deg", None, None, "CurrentLocation.Longitude"),
    _k("battery.soc", "%", 0.0, 60_000, "TractionBattery.StateOfCharge.Current"),
    _k("battery.lv_voltage", "V", 0.0, 60_000, "12 V battery voltage"),
    _k("charging.is_charging", "", True, None, "TractionBattery.Charging.IsCharging"),
    _k("charging.power_kw", "kW", INF, SAFETY_STALENESS_MS, "charging power"),
    _k("charging.cable_locked", "", None, None, "ChargingPort.IsChargingCableLocked"),
    _k("access.local_action", "", None, None, "last local (fob/BLE/handle) action: lock/unlock"),
    _k("service.mode", "", None, None, "dealer/service mode engaged in the car"),
    _k("binding.consent", "", None, None, "in-car consent given for the pending owner binding"),
    _k("firmware.rxswin", "", None, None, "vehicle software identification (R156 RXSWIN)"),
)

MAX_KEYS = 1024
MAX_KEY_LEN = 128
MAX_STR_LEN = 256
MAX_LIST_LEN = 64
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
_NO_SPEC = KeySpec(pattern="*")


def _valid_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return len(value) <= MAX_STR_LEN
    if isinstance(value, (list, tuple)):
        return len(value) <= MAX_LIST_LEN and all(
            isinstance(v, (bool, int, float, str)) and (not isinstance(v, str) or len(v) <= MAX_STR_LEN) for v in value)
    return False


class Twin:
    """Values with their wall time; staleness limits per key pattern."""

    __slots__ = ("_values", "_specs", "_spec_cache", "dropped")

    def __init__(self, specs: tuple[KeySpec, ...] = KEYS, *, staleness_overrides_ms: Mapping[str, int] | None = None) -> None:
        specs_list = list(specs)
        for pattern, limit in (staleness_overrides_ms or {}).items():
            base = next((s for s in specs_list if s.pattern == pattern), None)
            if base is None:
                raise ValueError(f"staleness override for unknown twin key {pattern!r}")
            if not isinstance(limit, int) or limit <= 0:
                raise ValueError(f"staleness override for {pattern!r} must be a positive int (ms), got {limit!r}")
            specs_list[specs_list.index(base)] = KeySpec(pattern=base.pattern, unit=base.unit, unsafe=base.unsafe,
                                                         staleness_ms=limit, doc=base.doc)
        self._specs = tuple(specs_list)
        self._spec_cache: dict[str, KeySpec] = {}
        self._values: dict[str, tuple[Any, int]] = {}
        self.dropped: Counter[str] = Counter()

    def spec(self, key: str) -> KeySpec:
        s = self._spec_cache.get(key)
        if s is None:
            s = next((sp for sp in self._specs if fnmatch.fnmatchcase(key, sp.pattern)), _NO_SPEC)
            if len(self._spec_cache) < 4 * MAX_KEYS:
                self._spec_cache[key] = s
        return s

    def update(self, values: Mapping[str, Any], now_ms: int) -> list[str]:
        """Store the readings taken at ``now_ms``; return the keys that changed value."""
        changed = []
        for key, value in values.items():
            if not isinstance(key, str) or len(key) > MAX_KEY_LEN or not _KEY_RE.match(key):
                self.dropped["bad_key"] += 1
                continue
            if not _valid_value(value):
                self.dropped["bad_value"] += 1
                continue
            if isinstance(value, tuple):
                value = list(value)
            old = self._values.get(key)
            if old is None and len(self._values) >= MAX_KEYS:
                self.dropped["too_many_keys"] += 1
                continue
            if old is not None and now_ms < old[1]:
                self.dropped["older_than_stored"] += 1
                continue
            self._values[key] = (value, now_ms)
            if old is None or old[0] != value:
                changed.append(key)
        return changed

    def get(self, key: str, now_ms: int) -> Any:
        """The value, or the key's unsafe value if it is a safety key that is stale or unknown."""
        entry = self._values.get(key)
        spec = self.spec(key)
        if spec.unsafe is None:
            return None if entry is None else entry[0]
        if entry is None or entry[0] is None:
            return spec.unsafe
        limit = spec.staleness_ms
        if limit is not None and now_ms - entry[1] > limit:
            return spec.unsafe
        return entry[0]

    def raw(self, key: str) -> Any:
        entry = self._values.get(key)
        return None if entry is None else entry[0]

    def age_ms(self, key: str, now_ms: int) -> float:
        """Milliseconds since the key was last reported (infinity if never)."""
        entry = self._values.get(key)
        return INF if entry is None else max(0, now_ms - entry[1])

    def snapshot(self) -> dict[str, list[Any]]:
        return {k: [v, t] for k, (v, t) in self._values.items()}

    def restore(self, snap: Mapping[str, Any]) -> None:
        for key, entry in snap.items():
            if (isinstance(key, str) and isinstance(entry, (list, tuple)) and len(entry) == 2
                    and isinstance(entry[1], int) and _valid_value(entry[0]) and len(self._values) < MAX_KEYS):
                self._values[key] = (entry[0], entry[1])
            else:
                self.dropped["bad_state_entry"] += 1

    def __len__(self) -> int:
        return len(self._values)
