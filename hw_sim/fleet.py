"""Fleets: many simulated chargers and vehicles in one process, each with its own agent.

One asyncio loop runs everything: per device an ``AgentHost`` (the real ledger, spool,
rules engine and uplink with its own MQTT session when a broker is given), a model, and
its benign days on the shared ``SimClock`` (time compression ``factor``). Chargers speak
OCPP to one in-process simulated CSMS through the shim's OCPP guard (over ``LoopShim``);
vehicles get commands from their app/OEM/dealer backends. Progress goes to ``progress``.

After the simulated span the models stop; with a broker the fleet waits (bounded) until
every device's receipts cover everything it had sealed, then stops the agents.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent_host import AgentHost, HostConfig
from .charger import ChargerConfig
from .clock import ClockConfig, SimClock, DEFAULT_START_MS
from .csms import Csms, CsmsError
from .days import DAY_MS, Day, load_days, run_day
from .devices import SimCharger, SimVehicle
from .vehicle import VehicleConfig

SERVICE_DAY_P = 1 / 180          # a dealer visit about twice a year
HOME_CHARGER_SHARE = 2 / 3       # the rest are public sites
STOP_TIMEOUT_S = 30.0            # real seconds for models, agents and the CSMS to wind down


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    workdir: Path
    chargers: int = 0
    vehicles: int = 0
    sim_hours: float = 1.0
    factor: float = 60.0
    scenario: str = "mixed"                  # "mixed" or comma-separated day ids
    start_hour: float = 6.5                  # simulated start time of day (UTC)
    seed: int = 1
    broker: tuple[str, int] | None = None
    collector_public_key: str | None = None  # hex, needed with a broker
    drain_timeout_s: float = 120.0
    heartbeat_ms: int | None = None          # agent heartbeat (simulated ms); None: agent default

    def __post_init__(self) -> None:
        if self.chargers < 0 or self.vehicles < 0 or self.chargers + self.vehicles == 0:
            raise ValueError(f"need at least one device, got chargers={self.chargers} vehicles={self.vehicles}")
        if not self.sim_hours > 0:
            raise ValueError(f"sim_hours must be > 0, got {self.sim_hours!r}")
        if self.broker is not None and not self.collector_public_key:
            raise ValueError("a broker needs collector_public_key (receipts are verified with it)")


@dataclass
class FleetDevice:
    id: str
    kind: str
    host: AgentHost
    sim: SimVehicle | SimCharger
    days: list[Day]
    task: asyncio.Task | None = None


@dataclass
class FleetResult:
    devices: list[FleetDevice] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _days_for(kind: str, scenario: str, rng: random.Random, all_days: dict[str, Day]) -> list[Day]:
    """The device's day programme. "mixed": vehicles commute on weekdays, run errands at
    weekends and visit the dealer now and then (``pick_day``); a charger is a home wallbox
    or a public site for its whole life. Otherwise: the listed day ids, in turn."""
    if scenario == "mixed":
        if kind == "vehicle":
            return [all_days["commute"], all_days["weekend"], all_days["service"]]
        return [all_days["home_charger" if rng.random() < HOME_CHARGER_SHARE else "public_charger"]]
    chosen = [all_days[d.strip()] for d in scenario.split(",") if d.strip() in all_days
              and all_days[d.strip()].device == kind]
    if not chosen:
        raise ValueError(f"scenario {scenario!r} has no {kind} day (known: {sorted(all_days)})")
    return chosen


def pick_day(days: list[Day], index: int, day_start_ms: int, rng: random.Random, mixed: bool) -> Day:
    if not mixed or len(days) == 1:
        return days[index % len(days)]
    weekday = (day_start_ms // DAY_MS + 3) % 7          # 1970-01-01 was a Thursday; 0 = Monday
    if weekday >= 5:
        return days[1]
    return days[2] if rng.random() < SERVICE_DAY_P else days[0]


def _uplink_table(cfg: FleetConfig) -> dict[str, Any] | None:
    if cfg.broker is None:
        return None
    return {"host": cfg.broker[0], "port": cfg.broker[1], "collector_public_key": cfg.collector_public_key,
            "batch_linger_ms": 500, "reconnect_max_s": 5.0, "status_interval_s": 600.0}


async def _counted(coro: Any, errors: Counter[str], kind: str) -> None:
    """Run one device model; if it fails (e.g. an OCPP call to the CSMS timed out), that device
    is out of the simulation and the failure is counted by kind, the fleet goes on."""
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - one device's failure must not end the fleet; counted
        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        errors[f"{kind}:{type(leaf).__name__}"] += 1


async def _device_life(dev: FleetDevice, clock: SimClock, rng: random.Random, end_ms: int, mixed: bool,
                       errors: Counter[str]) -> None:
    now = clock.now_ms()      # one reading: two would straddle midnight at high compression (a Monday ran as Sunday)
    day_start = now - now % DAY_MS
    i = 0
    while clock.now_ms() < end_ms:
        try:
            await run_day(pick_day(dev.days, i, day_start, rng, mixed), dev.sim, rng, day_start)
        except CsmsError as exc:       # e.g. the charger's connection dropped: the rest of its day is lost, counted
            errors[f"{dev.kind}:{'not_connected' if 'not connected' in str(exc) else 'csms_call_failed'}"] += 1
        day_start += DAY_MS
        i += 1


async def run_fleet(cfg: FleetConfig, progress: Callable[[str], None] = lambda s: None, *,
                    enroll: Callable[[str, Path], None] | None = None) -> FleetResult:
    """Run the fleet; ``enroll(device_id, enrollment_file)`` is called for each device before its
    agent starts (register it at the collector)."""
    rng = random.Random(cfg.seed)
    start_ms = DEFAULT_START_MS + int(cfg.start_hour * 3_600_000)
    clock = SimClock(ClockConfig(start_wall_ms=start_ms, factor=cfg.factor))
    all_days = load_days()
    csms = Csms(clock, heartbeat_s=900)
    result = FleetResult()
    t0 = time.monotonic()
    if cfg.chargers:
        await csms.start()
    uplink = _uplink_table(cfg)
    for i in range(cfg.vehicles + cfg.chargers):
        kind = "vehicle" if i < cfg.vehicles else "charger"
        dev_id = f"sim-{'tcu' if kind == 'vehicle' else 'cp'}-{i:05d}"
        host = AgentHost(cfg.workdir / dev_id, HostConfig(
            device_id=dev_id, device_class="tcu" if kind == "vehicle" else "charger", uplink=uplink,
            heartbeat_ms=cfg.heartbeat_ms), clock)
        if enroll is not None:
            enroll(dev_id, host.enrollment)
        await host.start()
        link = host.link()
        if kind == "vehicle":
            sim: SimVehicle | SimCharger = SimVehicle(VehicleConfig(vin=f"WVTSIM{i:011d}"), link, clock,
                                                      seed=cfg.seed * 100_003 + i, tick_s=30)
        else:
            sim = SimCharger(ChargerConfig(charger_id=dev_id, connectors=2), link, clock, csms,
                             ocpp_version="2.0.1" if i % 2 else "1.6", physics_interval_s=60, connect_attempts=6)
        result.devices.append(FleetDevice(dev_id, kind, host, sim, _days_for(kind, cfg.scenario, rng, all_days)))
        if (i + 1) % 100 == 0:
            progress(f"fleet: {i + 1}/{cfg.vehicles + cfg.chargers} agents initialised")
    progress(f"fleet: {len(result.devices)} agents up in {time.monotonic() - t0:.1f}s; "
             f"simulating {cfg.sim_hours} h at {cfg.factor:g}x")
    end_ms = clock.now_ms() + int(cfg.sim_hours * 3_600_000)
    t_sim = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        runners = []
        for k, d in enumerate(result.devices):
            runners.append(tg.create_task(d.host.run()))
            if cfg.broker is not None and k % 20 == 19:
                await asyncio.sleep(0.2)   # stagger MQTT connects: 20 per 0.2 s, no SYN storm at the broker
        model_errors: Counter[str] = Counter()
        sims = [tg.create_task(_counted(d.sim.run(), model_errors, d.kind)) for d in result.devices]
        if cfg.chargers:
            await asyncio.gather(*(d.sim.ready(60) for d in result.devices if d.kind == "charger"))
        day_errors: Counter[str] = Counter()
        lives = [tg.create_task(_device_life(d, clock, random.Random(cfg.seed + k), end_ms, cfg.scenario == "mixed",
                                             day_errors)) for k, d in enumerate(result.devices)]
        while clock.now_ms() < end_ms:
            await asyncio.sleep(min(5.0, max(0.05, (end_ms - clock.now_ms()) / 1000 / cfg.factor)))
            recs = sum(d.host.ledger.sealer.next_seq for d in result.devices)
            progress(f"fleet: sim +{(clock.now_ms() - (end_ms - int(cfg.sim_hours * 3_600_000))) / 3_600_000:.2f} h, "
                     f"{recs} records sealed, wall {time.monotonic() - t_sim:.0f}s")
        for t in lives:
            t.cancel()
        for d in result.devices:
            d.sim.stop()
        _, pending = await asyncio.wait(sims, timeout=STOP_TIMEOUT_S / 2)
        for t in pending:       # a model that does not wind down in time is cut off, and counted
            t.cancel()
        stuck = len(pending)
        if stuck:
            progress(f"fleet: {stuck} device models did not stop within 15 s (cancelled)")
        sim_wall = time.monotonic() - t_sim
        drained = await _drain(result.devices, cfg, progress) if cfg.broker else None
        # agents stop concurrently (each waits for its fsync), bounded: one that hangs is cancelled and counted
        stops = [asyncio.ensure_future(d.host.stop()) for d in result.devices]
        _, late_stops = await asyncio.wait(stops, timeout=STOP_TIMEOUT_S)
        _, late_runners = await asyncio.wait(runners, timeout=STOP_TIMEOUT_S)
        for t in (*late_stops, *late_runners):
            t.cancel()
        agents_cancelled = len(late_stops) + len(late_runners)
        stop_errors = Counter(type(t.exception()).__name__ for t in stops
                              if t.done() and not t.cancelled() and t.exception() is not None)
        if agents_cancelled:
            progress(f"fleet: {agents_cancelled} agent stops/runners did not finish within {STOP_TIMEOUT_S:g} s (cancelled)")
    if cfg.chargers:
        try:
            await asyncio.wait_for(csms.close(), STOP_TIMEOUT_S)
        except TimeoutError:
            progress("fleet: the CSMS did not close in time (abandoned)")
    result.summary = _summary(result.devices, cfg, sim_wall, drained)
    result.summary["models_cancelled_on_stop"] = stuck
    result.summary["agents_cancelled_on_stop"] = agents_cancelled
    result.summary["agent_stop_errors"] = dict(stop_errors)
    result.summary["days_abandoned"] = dict(day_errors)      # counted, never silent
    result.summary["models_failed"] = dict(model_errors)
    result.summary["charger_connection_losses"] = sum(
        d.sim.session.connect_failures for d in result.devices if isinstance(d.sim, SimCharger))
    for d in result.devices:
        d.host.close()
    progress(f"fleet: done in {time.monotonic() - t0:.0f}s wall")
    return result


async def _drain(devices: list[FleetDevice], cfg: FleetConfig, progress: Callable[[str], None]) -> dict[str, int]:
    """Wait until every device's newest receipt covers what it had sealed when the models stopped."""
    for d in devices:
        await d.host.ledger.drained()
    target = {d.id: d.host.ledger.durable_seq for d in devices}
    deadline = time.monotonic() + cfg.drain_timeout_s
    while True:
        behind = [d for d in devices if (d.host.spool.last_receipt() or (0, -1))[1] < target[d.id]]
        if not behind or time.monotonic() > deadline:
            break
        progress(f"fleet: waiting for receipts, {len(behind)} devices behind "
                 f"(e.g. {behind[0].id}: {_uplink_brief(behind[0])})")
        await asyncio.sleep(1.0)
    return {"target_seq_total": sum(v + 1 for v in target.values()), "devices_behind": len(behind),
            **{f"target:{k}": v for k, v in target.items()}}


def _uplink_brief(d: FleetDevice) -> str:
    u = d.host.uplink
    if u is None:
        return "no uplink"
    st = u.state()
    return (f"connected={st['connected']} inflight={st['inflight']} last_receipt={st['last_receipt']} "
            f"cursor={st['cursor_cp']} error={st['last_error']} counts={st['counts']}")


def _summary(devices: list[FleetDevice], cfg: FleetConfig, sim_wall_s: float, drained: dict | None) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    records = 0
    for d in devices:
        records += d.host.ledger.sealer.next_seq
        if cfg.broker is None:   # without receipts nothing was deleted: count from the spool
            for r in d.host.records():
                kinds[r.get("kind", "?")] += 1
                if r.get("kind") == "alert":
                    rules[str((r.get("x") or {}).get("rule"))] += 1
    device_days = len(devices) * cfg.sim_hours / 24
    out: dict[str, Any] = {"devices": len(devices), "vehicles": cfg.vehicles, "chargers": cfg.chargers,
                           "sim_hours": cfg.sim_hours, "factor": cfg.factor, "device_days": round(device_days, 3),
                           "records": records, "sim_wall_s": round(sim_wall_s, 1)}
    if cfg.broker is None:
        out.update(kinds=dict(kinds), alerts=sum(rules.values()), alert_rules=dict(rules),
                   alerts_per_100_device_days=round(100 * sum(rules.values()) / device_days, 3))
    if drained is not None:
        out["drain"] = {k: v for k, v in drained.items() if not k.startswith("target:")}
        out["expected_seq"] = {k[7:]: v for k, v in drained.items() if k.startswith("target:")}
    return out
