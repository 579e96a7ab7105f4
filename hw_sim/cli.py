"""`veritrail sim ...`: charger, csms, vehicle, fleet, report.

    veritrail sim charger --csms ws://HOST:PORT/ID [--ocpp 1.6|2.0.1] --agent SOCKET [--hours H] [--factor F]
    veritrail sim csms [--port P] [--hours H] [--factor F]          a CSMS that runs benign ops on whoever connects
    veritrail sim vehicle --agent SOCKET [--day commute] [--days N] [--factor F]
    veritrail sim fleet --chargers N --vehicles M [--scenario mixed|DAY,...] [--broker HOST:PORT
                        --collector-key HEX | --collector-config FILE] [--hours H] [--factor F] [--dir DIR]
    veritrail sim report [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from .clock import ClockConfig, SimClock, DEFAULT_START_MS


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def _clock(args: argparse.Namespace) -> SimClock:
    return SimClock(ClockConfig(start_wall_ms=DEFAULT_START_MS + int(args.start_hour * 3_600_000), factor=args.factor))


async def _charger(args: argparse.Namespace) -> int:
    from .charger import ChargerConfig
    from .charger_run import ChargerError, ChargerSession, SessionConfig
    from .charger import ChargerModel
    from .wiring import ShimLink
    clock = _clock(args)
    cid = args.csms.rstrip("/").rsplit("/", 1)[-1]
    link = ShimLink.connect(args.agent)
    model = ChargerModel(ChargerConfig(charger_id=cid, connectors=args.connectors))
    session = ChargerSession(model, link, clock, SessionConfig(csms_url=args.csms, ocpp_version=args.ocpp))
    task = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(session.booted.wait(), 15)
        _progress(f"charger {cid}: booted (OCPP {args.ocpp}), plugging in an EV")
        model.plug_in(1, ev_demand_a=32)
        await clock.sleep(args.hours * 3600)
    except ChargerError as exc:
        _progress(f"charger {cid}: {exc.reason}")
        return 1
    finally:
        session.stop()
        try:
            await asyncio.wait_for(task, 10)
        except (ChargerError, asyncio.TimeoutError) as exc:
            _progress(f"charger {cid}: {exc}")
        link.flush()
        link.close()
    return 0


async def _csms(args: argparse.Namespace) -> int:
    from .csms import Csms, CsmsError
    clock = _clock(args)
    csms = Csms(clock)
    port = await csms.start(args.host, args.port)
    _progress(f"csms listening on ws://{args.host}:{port}/<charger id> (OCPP 1.6 and 2.0.1)")
    served: set[str] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + args.hours * 3600 / args.factor
    while loop.time() < end:
        for cid in list(csms.chargers):
            if cid not in served and csms.views[cid].boots:
                served.add(cid)
                async def ops(c: str = cid) -> None:
                    try:
                        done = await csms.benign_day_ops(c, hours=1.0)
                        _progress(f"csms: {c}: {', '.join(done)}")
                    except CsmsError as exc:
                        _progress(f"csms: {c}: {exc.reason}")
                loop.create_task(ops())
        await asyncio.sleep(0.2)
    await csms.close()
    return 0


async def _vehicle(args: argparse.Namespace) -> int:
    from .days import DAY_MS, load_days, run_day
    from .devices import SimVehicle
    from .vehicle import VehicleConfig
    from .wiring import ShimLink
    clock = _clock(args)
    link = ShimLink.connect(args.agent)
    car = SimVehicle(VehicleConfig(vin=args.vin), link, clock, seed=args.seed)
    day = load_days()[args.day]
    runner = asyncio.create_task(car.run())
    rng = random.Random(args.seed)
    try:
        start = clock.now_ms() - clock.now_ms() % DAY_MS
        for n in range(args.days):
            actions = await run_day(day, car, rng, start + n * DAY_MS)
            _progress(f"vehicle {car.vin}: day {n + 1} ({day.id}): {actions} actions")
    finally:
        car.stop()
        await runner
        link.flush()
        link.close()
    return 0


async def _fleet(args: argparse.Namespace) -> int:
    from .fleet import FleetConfig, run_fleet
    key, enroll = args.collector_key, None
    if args.collector_config:
        from agent.core.export import Trust
        from cloud_collector.config import CollectorConfig
        from cloud_collector.store import open_store
        ccfg = CollectorConfig.load(args.collector_config)
        store = open_store(ccfg.store)
        if key is None:
            pub = Path(args.collector_config).with_name("collector.pub.json")
            key = json.loads(pub.read_text())["public_key"]

        def enroll(dev: str, path: Path) -> None:
            store.enroll(Trust.from_enrollment(json.loads(path.read_text())), DEFAULT_START_MS)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vt-fleet-",
                                                                    dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    cfg = FleetConfig(workdir=workdir, chargers=args.chargers, vehicles=args.vehicles, sim_hours=args.hours,
                      factor=args.factor, scenario=args.scenario, seed=args.seed, broker=args.broker,
                      collector_public_key=key)
    result = await run_fleet(cfg, _progress, enroll=enroll)
    print(json.dumps({k: v for k, v in result.summary.items() if k != "expected_seq"}, sort_keys=True))
    return 0 if not result.summary.get("drain", {}).get("devices_behind") else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="veritrail sim", description="simulated chargers, vehicles, backends, fleets")
    sub = p.add_subparsers(dest="cmd", required=True)

    def timing(sp: argparse.ArgumentParser, hours: float, factor: float) -> None:
        sp.add_argument("--hours", type=float, default=hours, help="simulated hours to run")
        sp.add_argument("--factor", type=float, default=factor, help="time compression (simulated s per real s)")
        sp.add_argument("--start-hour", type=float, default=6.5, help="simulated UTC hour of day to start at")
        sp.add_argument("--seed", type=int, default=1)

    c = sub.add_parser("charger", help="one charger against a CSMS, through the shim's OCPP guard")
    c.add_argument("--csms", required=True, help="ws://HOST:PORT/CHARGER_ID")
    c.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="1.6")
    c.add_argument("--agent", required=True, help="the agent's Unix socket")
    c.add_argument("--connectors", type=int, default=2)
    timing(c, 2.0, 60.0)
    s = sub.add_parser("csms", help="a simulated CSMS running benign operations")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9000)
    timing(s, 24.0, 60.0)
    v = sub.add_parser("vehicle", help="one vehicle living benign days, commands from its backends")
    v.add_argument("--agent", required=True, help="the agent's Unix socket")
    v.add_argument("--vin", default="WVTSIM00000000001")
    v.add_argument("--day", default="commute")
    v.add_argument("--days", type=int, default=1)
    timing(v, 24.0, 600.0)
    f = sub.add_parser("fleet", help="many devices, each with its own agent and MQTT session")
    f.add_argument("--chargers", type=int, default=0)
    f.add_argument("--vehicles", type=int, default=0)
    f.add_argument("--scenario", default="mixed", help="mixed, or day ids (commute,weekend,...)")
    f.add_argument("--broker", type=_hostport, help="HOST:PORT of the MQTT broker (omit: no uplink)")
    f.add_argument("--collector-key", help="collector public key (hex) for receipts")
    f.add_argument("--collector-config", help="collector.toml: enrol the devices in its store and read its key")
    f.add_argument("--dir", help="state directory for the agents (default: a temp dir on /dev/shm)")
    timing(f, 1.0, 60.0)
    r = sub.add_parser("report", help="detection report over all catalogue scenarios")
    r.add_argument("rest", nargs=argparse.REMAINDER)
    if argv[:1] == ["report"]:
        from .report import main as report_main
        return report_main(argv[1:])
    args = p.parse_args(argv)
    runners: dict[str, Any] = {"charger": _charger, "csms": _csms, "vehicle": _vehicle, "fleet": _fleet}
    return asyncio.run(runners[args.cmd](args))
