"""Benign "days" from data files (hw_sim/scenarios/days/*.toml), with seeded randomness.

A day file lists events, each at a time of day (up to 35:59: the next morning) with a uniform jitter (``jitter_min``) and
a probability ``p``, carrying actions run in order. Vehicle actions: ``app``/``oem``/
``dealer`` (a remote command through that backend), ``fob`` (lock/unlock), ``enter``,
``leave``, ``drive`` (waits until arrival), ``plug``, ``unplug``, ``consent``,
``service_mode``, ``wait``, ``maybe`` (``p`` and ``then``: nested actions). Charger
actions: ``plug``, ``unplug``, ``ev_full``, ``remote_start``, ``remote_stop``, ``csms``
(SetChargingProfile with ``profile_a``, ClearChargingProfile, Reset, GetConfiguration),
``tamper``, ``wait``, ``maybe``. Time runs on the simulation clock, so a time-compression
factor turns a day into seconds of wall time.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .devices import SimCharger, SimVehicle

DAYS_DIR = Path(__file__).parent / "scenarios" / "days"
DAY_MS = 86_400_000
MAX_MINUTE = 36 * 60   # "at" may reach into the next morning (up to 35:59) for overnight sessions
VEHICLE_OPS = frozenset({"app", "oem", "dealer", "fob", "enter", "leave", "drive", "plug", "unplug", "consent",
                         "service_mode", "wait", "maybe"})
CHARGER_OPS = frozenset({"plug", "unplug", "ev_full", "remote_start", "remote_stop", "csms", "tamper", "wait", "maybe"})


class DayError(Exception):
    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(f"{source or '<day>'}: {reason}")
        self.reason, self.source = reason, source


@dataclass(frozen=True, slots=True)
class DayEvent:
    at_min: int
    jitter_min: int
    p: float
    actions: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Day:
    id: str
    device: str
    description: str
    events: tuple[DayEvent, ...]


def _check_actions(actions: Any, allowed: frozenset[str], where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise DayError("actions must be a list of tables", where)
    for a in actions:
        op = a.get("op")
        if op not in allowed:
            raise DayError(f"unknown op {op!r} (allowed: {sorted(allowed)})", where)
        if op == "maybe":
            _check_actions(a.get("then"), allowed, where)
    return tuple(actions)


def load_day(path: Path | str) -> Day:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DayError(f"unreadable: {exc}", str(path)) from None
    device = doc.get("device")
    if device not in ("vehicle", "charger"):
        raise DayError(f"device must be vehicle or charger, got {device!r}", str(path))
    allowed = VEHICLE_OPS if device == "vehicle" else CHARGER_OPS
    events = []
    for i, ev in enumerate(doc.get("event", [])):
        where = f"{path.name} event {i}"
        try:
            hh, mm = (int(x) for x in str(ev["at"]).split(":"))
        except (KeyError, ValueError):
            raise DayError("event needs at = \"HH:MM\"", where) from None
        if not (0 <= hh * 60 + mm < MAX_MINUTE and 0 <= mm < 60):
            raise DayError(f"at must be 00:00..35:59, got {ev['at']!r}", where)
        p = float(ev.get("p", 1.0))
        if not 0 <= p <= 1:
            raise DayError(f"p must be within 0..1, got {p}", where)
        events.append(DayEvent(hh * 60 + mm, int(ev.get("jitter_min", 0)), p,
                               _check_actions(ev.get("actions"), allowed, where)))
    return Day(str(doc.get("id", path.stem)), device, str(doc.get("description", "")), tuple(events))


def load_days(directory: Path = DAYS_DIR) -> dict[str, Day]:
    return {d.id: d for d in (load_day(p) for p in sorted(directory.glob("*.toml")))}


def plan(day: Day, rng: random.Random, day_start_ms: int) -> list[tuple[int, DayEvent]]:
    """The events that happen today, with their sampled wall times, in order."""
    out = []
    for ev in day.events:
        if rng.random() >= ev.p:
            continue
        minute = ev.at_min + rng.uniform(-ev.jitter_min, ev.jitter_min)
        out.append((day_start_ms + int(max(0.0, min(minute, MAX_MINUTE - 1)) * 60_000), ev))
    out.sort(key=lambda t: t[0])
    return out


async def run_day(day: Day, device: SimVehicle | SimCharger, rng: random.Random, day_start_ms: int) -> int:
    """Run one day on ``device``; returns the number of actions carried out."""
    done = 0
    for when, ev in plan(day, rng, day_start_ms):
        await device.clock.sleep_until(when)
        done += await _run_actions(ev.actions, device, rng)
    await device.clock.sleep_until(day_start_ms + DAY_MS)
    return done


async def _run_actions(actions: tuple[dict[str, Any], ...] | list[dict[str, Any]], device: Any,
                       rng: random.Random) -> int:
    n = 0
    for a in actions:
        op = a["op"]
        if op == "maybe":
            if rng.random() < float(a.get("p", 0.5)):
                n += await _run_actions(a["then"], device, rng)
            continue
        if op == "wait":
            await device.clock.sleep(float(a.get("min", 1)) * 60)
        elif isinstance(device, SimVehicle):
            await _vehicle_op(device, op, a)
        else:
            await _charger_op(device, op, a)
        n += 1
    return n


async def _vehicle_op(v: SimVehicle, op: str, a: dict[str, Any]) -> None:
    m = v.model
    if op in ("app", "oem", "dealer"):
        await v.command(op, a["cmd"], **a.get("args", {}))
    elif op == "fob":
        m.local(a.get("action", "unlock"), by="fob")
    elif op == "enter":
        m.enter(with_key=bool(a.get("key", True)))
    elif op == "leave":
        m.leave()
    elif op == "drive":
        await v.drive_until_arrived(a["to"], float(a.get("kmh", 50)))
    elif op == "plug":
        m.plug_in(float(a.get("kw", 11)), float(a.get("target", 80)))
        m.publish()
    elif op == "unplug":
        m.unplug()
        m.publish()
    elif op == "consent":
        m.consent(bool(a.get("given", True)))
    elif op == "service_mode":
        m.service_mode(bool(a.get("on", True)))


async def _charger_op(c: SimCharger, op: str, a: dict[str, Any]) -> None:
    m, conn = c.model, int(a.get("connector", 1))
    if op == "plug":
        m.plug_in(conn, float(a.get("amps", 32)))
    elif op == "unplug":
        m.unplug(conn)
    elif op == "ev_full":
        m.ev_full(conn)
    elif op == "tamper":
        m.set_tamper(bool(a.get("open", True)))
    elif op == "remote_start":
        m.owner_override = True    # started from the driver's app: an explicit "charge now"
        await c.remote_start(conn, str(a.get("id_tag", "APP")))
    elif op == "remote_stop":
        await c.remote_stop(conn)
    elif op == "csms":
        action = a.get("action")
        if action == "SetChargingProfile":
            await c.set_limit(conn, float(a.get("profile_a", 16)))
        elif action == "ClearChargingProfile":
            await c.clear_limit()
        elif action == "Reset":
            await c.reset(str(a.get("type", "Soft")))
        elif action == "GetConfiguration":
            await c.read_config()
        else:
            raise DayError(f"csms action {action!r} is not a benign day operation")
