"""`veritrail bench NAME [--quick] --json`.

Every benchmark prints progress on stderr and one JSON object on stdout. Each measures
its own baseline in the same run, because the machine is shared and noisy: ratios
count, not absolute times. To add one, add a line to ``BENCHES``: the module must have
``run(quick: bool, progress) -> dict``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import subprocess
import sys

BENCHES: dict[str, str] = {
    "chain": "agent.bench.chain",
    "ingest": "agent.bench.ingest",
    "wire": "cloud_collector.bench_wire",
    "rules": "agent.rules.bench",
    "check": "agent.bench.check",
    "footprint": "hw_sim.bench.footprint",
    "evidence": "hw_sim.bench.evidence",
}


def stop_daemon(proc: "subprocess.Popen[bytes]", timeout_s: float = 60.0) -> None:
    """SIGTERM a benchmark's daemon (its orderly stop seals a final checkpoint); kill it if it hangs."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail bench")
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument("--quick", action="store_true", help="short run (< 1 minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    module = importlib.import_module(BENCHES[args.name])
    result = module.run(quick=args.quick, progress=progress)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in sorted(result.items()):
            print(f"{key:>28}: {value}")
    return 0
