"""`veritrail sim report [--quick] --json`: the detection report.

Every catalogue scenario (the rules' own files in agent/rules/scenarios) is replayed
through the real shim into a fresh real agent (``replay.py``); what fired is read from the
agent's records. Then a benign fleet runs the day programmes (``fleet.py``, in-process
agents, no broker) and its alert records give ``alerts_per_100_device_days``.
``--quick`` shortens only the fleet run (fewer devices, fewer simulated hours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .fleet import FleetConfig, run_fleet
from .replay import run_scenario, scenario_paths

FULL_FLEET = {"vehicles": 60, "chargers": 40, "sim_hours": 168.0, "factor": 7200.0}   # a week: weekend days too
QUICK_FLEET = {"vehicles": 20, "chargers": 10, "sim_hours": 24.0, "factor": 7200.0}


def build_report(*, quick: bool, progress: Callable[[str], None], workdir: Path | None = None,
                 only: str | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    rows = []
    paths = [p for p in scenario_paths() if only is None or p.stem.startswith(only)]
    if not paths:
        raise SystemExit("veritrail sim report: no scenario files found in agent/rules/scenarios")
    for i, path in enumerate(paths, 1):
        run = run_scenario(path, workdir)
        rows.append(run.as_dict())
        progress(f"report: {i}/{len(paths)} {run.id}: {run.verdict} {','.join(run.fired) or '-'}")
    attacks = [r for r in rows if r["kind"] == "attack"]
    benign = [r for r in rows if r["kind"] == "benign"]
    fleet_cfg = QUICK_FLEET if quick else FULL_FLEET
    progress(f"report: benign fleet {fleet_cfg}")
    with tempfile.TemporaryDirectory(prefix="vt-report-fleet-", dir=workdir) as tmp:
        fleet = asyncio.run(run_fleet(FleetConfig(workdir=Path(tmp), **fleet_cfg), progress)).summary
    return {
        "scenarios": rows,
        "attack_scenarios": len(attacks),
        "attack_detected": sum(1 for r in attacks if r["verdict"] == "detected"),
        "benign_scenarios": len(benign),
        "benign_with_alert": sum(1 for r in benign if r["verdict"] != "clean"),
        "missed": [r["id"] for r in attacks if r["verdict"] != "detected"],
        "benign_alerting": {r["id"]: r["fired_rules"] for r in benign if r["verdict"] != "clean"},
        "alerts_per_100_device_days": fleet["alerts_per_100_device_days"],
        "fleet": {k: fleet[k] for k in ("devices", "vehicles", "chargers", "sim_hours", "device_days", "records",
                                        "alerts", "alert_rules", "kinds", "sim_wall_s", "models_cancelled_on_stop",
                                        "agents_cancelled_on_stop", "models_failed", "days_abandoned",
                                        "charger_connection_losses") if k in fleet},
        "quick": quick,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="veritrail sim report", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short benign fleet run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--only", help="only scenarios whose id starts with this (e.g. CP-0)")
    args = p.parse_args(argv)
    report = build_report(quick=args.quick, progress=lambda s: print(s, file=sys.stderr), only=args.only)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(f"attacks detected {report['attack_detected']}/{report['attack_scenarios']}, "
              f"benign with alert {report['benign_with_alert']}/{report['benign_scenarios']}, "
              f"alerts per 100 device-days {report['alerts_per_100_device_days']}")
        for r in report["scenarios"]:
            print(f"  {r['id']:<22} {r['kind']:<7} {r['verdict']:<9} fired={','.join(r['fired_rules']) or '-'}"
                  f" latency_us={r['latency_us']}")
    return 0
