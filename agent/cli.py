"""The `veritrail` console command.

Each subcommand lives in its own module with a ``main(argv) -> int`` function and is
imported only when called, so a device without the collector's or simulator's extras
installed can still run ``veritrail agent ...`` and ``veritrail verify ...``.
To add a subcommand, add one line to ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("agent.verify_cli", "verify an exported record stream offline"),
    "verify-evidence": ("agent.evidence_cli", "check an alert's evidence bundle offline"),
    "agent": ("agent.daemon_cli", "init, run and inspect the on-device agent"),
    "rules": ("agent.rules.cli", "bundle, lint and test rule packs"),
    "collector": ("cloud_collector.cli", "run the cloud collector, enroll devices"),
    "log": ("cloud_collector.tlog.log_cli", "follow the collector's transparency log: verify, key, cosign"),
    "witness": ("cloud_collector.tlog.witness_cli", "a witness that cosigns the collector's log (own key)"),
    "sim": ("hw_sim.cli", "simulated chargers, vehicles, backends and fleets"),
    "bench": ("agent.bench", "benchmarks: veritrail bench NAME [--quick] --json"),
}


def _usage() -> str:
    lines = ["usage: veritrail COMMAND [ARGS...]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("Run 'veritrail COMMAND --help' for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"veritrail: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"veritrail {name}: not available here ({exc.name} is not installed); "
            "install the matching extra, e.g. pip install 'veritrail[collector,sim]'",
            file=sys.stderr,
        )
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
