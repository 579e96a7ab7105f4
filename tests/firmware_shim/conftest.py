"""Fixtures for the firmware_shim tests: real MicroPython (WebAssembly port, via Node)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIM_DIR = ROOT / "firmware_shim"
RUNNER = Path(__file__).with_name("mp_runner.mjs")
MP_PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


@pytest.fixture(scope="session")
def micropython() -> Callable[[str], str]:
    """run(code) -> stdout of `code` executed by real MicroPython with the shim mounted.

    Missing Node or the npm package is a failure, not a skip: `make test` installs both
    (scripts/ensure-system-deps.sh, `npm install`), and a skipped portability test would
    let a CPython-only construct slip into the portable core unnoticed."""
    node = shutil.which("node")
    if node is None or not MP_PACKAGE.is_dir():
        pytest.fail("real MicroPython needs node and `npm install` in the repo root (make node-deps)")

    def run(code: str) -> str:
        proc = subprocess.run(
            [node, str(RUNNER), str(SHIM_DIR)],
            input=code,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise AssertionError(f"MicroPython run failed:\n{proc.stderr}\n--- stdout ---\n{proc.stdout}")
        return proc.stdout

    return run


@pytest.fixture(scope="session")
def cpython() -> Callable[[str], str]:
    """run(code) -> stdout of the same kind of script under this CPython (a fresh process)."""

    def run(code: str) -> str:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        if proc.returncode != 0:
            raise AssertionError(f"CPython run failed:\n{proc.stderr}")
        return proc.stdout

    return run


@pytest.fixture
def agent_address(tmp_path: Path) -> str:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be long.
    path = tmp_path / "agent.sock"
    if len(str(path)) > 100:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="vt-")) / "agent.sock"
    return f"unix:{path}"
