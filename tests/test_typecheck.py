"""mypy over the agent and the collector, as CI runs it (the shim's portable core is checked
against the MicroPython stubs in tests/firmware_shim/test_typecheck.py). Packages without
type information (msgpack, cbor2, paho's partial stubs aside) are taken as Any."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_agent_and_collector_type_check_clean():
    res = subprocess.run([sys.executable, "-m", "mypy", "agent", "cloud_collector", "--ignore-missing-imports",
                          "--no-error-summary", "--cache-dir", str(REPO / ".venv" / ".mypy_cache")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    errors = [line for line in res.stdout.splitlines() if ": error:" in line]
    assert res.returncode == 0 and not errors, "\n".join(errors or [res.stdout[-2000:], res.stderr[-2000:]])
