"""The portable core type-checks against the MicroPython stubs (micropython-esp32-stubs,
the board family most chargers' companion MCUs use, with the reduced MicroPython stdlib):
a CPython-only name used outside a guarded import fails here before it fails on a device.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTABLE = [
    "__init__.py",
    "umsgpack.py",
    "framing.py",
    "compat.py",
    "transport.py",
    "redact.py",
    "verdict.py",
    "config.py",
    "ring.py",
    "shim.py",
]
STUB_DISTS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")


def _copy_stubs(dest: Path) -> list[str]:
    """Board stubs install as top-level .pyi files in site-packages, which mypy refuses on
    MYPYPATH; copy them (and the stdlib package's helper `_mpy_shed`) into `dest`."""
    modules: set[str] = set()
    for dist_name in STUB_DISTS:
        try:
            files = importlib.metadata.files(dist_name) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{dist_name} is not installed: pip install -e '.[dev]'")
        for f in files:
            parts = Path(str(f)).parts
            if not str(f).endswith(".pyi") or parts[0] == "stdlib" or parts[0] == "stubs":
                continue
            target = dest / str(f)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(str(f.locate())), target)
            modules.add(parts[0].removesuffix(".pyi"))
    return sorted(modules)


def test_portable_core_typechecks_against_micropython_stubs(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    modules = _copy_stubs(stubs)
    assert {"socket", "select", "hashlib", "time", "_mpy_shed"} <= set(modules)
    # errors inside the third-party stubs themselves are not ours to fix
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\ncheck_untyped_defs = True\nwarn_unused_ignores = True\n"
        + "".join(f"[mypy-{m}.*]\nignore_errors = True\n[mypy-{m}]\nignore_errors = True\n" for m in modules)
    )
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [
            sys.executable, "-m", "mypy",
            "--config-file", str(config),
            "--custom-typeshed-dir", site,  # MicroPython's reduced stdlib instead of CPython's
            "--no-site-packages",
            "--cache-dir", str(tmp_path / "cache"),
            *[f"firmware_shim/{name}" for name in PORTABLE],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
