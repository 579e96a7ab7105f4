"""docs/device-makers.md shows tested commands only: every `console` block runs here, in
order, as a bash script (`set -e`) in a temp folder `$VT` (`$VT/src` is this repository), with
the files the page writes (`<!-- write: NAME -->` before a code block) in place. The shim
examples must print the verdicts the page says (CPython and MicroPython's Unix port)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "device-makers.md"


def parse(text: str) -> tuple[list[str], dict[str, str]]:
    """(console blocks as bash scripts, {file name: body} of the blocks marked to be written)."""
    scripts: list[str] = []
    files: dict[str, str] = {}
    lines = text.splitlines()
    pending: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("<!-- write: "):
            pending = line.removeprefix("<!-- write: ").removesuffix(" -->").strip()
        elif line.startswith("```") and line.strip() != "```":
            lang = line[3:].strip()
            body = []
            i += 1
            while lines[i] != "```":
                body.append(lines[i])
                i += 1
            if pending is not None:
                files[pending] = "\n".join(body) + "\n"
                pending = None
            elif lang == "console":
                scripts.append("\n".join(b[2:] if b.startswith("$ ") else b for b in body) + "\n")
        i += 1
    return scripts, files


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def test_every_console_block_of_the_device_makers_guide_runs() -> None:
    scripts, files = parse(DOC.read_text())
    assert len(scripts) >= 6 and set(files) == {"shim_app.py", "mp_app.py"}
    vt = Path(tempfile.mkdtemp(prefix="vt-doc-"))  # short: the agent's socket path must fit AF_UNIX
    try:
        (vt / "src").symlink_to(ROOT)
        for name, body in files.items():
            (vt / name).write_text(body)
        bindir = Path(sys.executable).parent
        env = {**os.environ, "VT": str(vt), "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("NOTIFY_SOCKET", None)
        out = []
        online = _pypi_reachable()
        for script in scripts:
            if "wheelhouse" in script and not online:
                continue  # tests/agent/test_wheelhouse.py reports that skip with its reason
            res = subprocess.run(["bash", "-e", "-c", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script],
                                 cwd=vt, env=env, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, (f"block failed:\n{script}\n--- stdout\n{res.stdout[-3000:]}\n"
                                         f"--- stderr\n{res.stderr[-3000:]}")
            out.append(res.stdout)
        text = "".join(out)
        assert text.count("unlock: block agent") == 2, text  # CPython and MicroPython, as the page says
        assert "not running" in text  # the status after the stop comes from the spool
        assert "Type=notify" in text and "ReadWritePaths=/var/lib/veritrail" in text
    finally:
        shutil.rmtree(vt, ignore_errors=True)
