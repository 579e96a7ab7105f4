"""End to end: the shim against the real agent daemon (`veritrail agent run`, its own
process), across an agent restart. The exported, sealed spool must hold every record in
the order the caller made them, the fallback the shim applied while the agent was down,
and `cmd` records for the checks the agent judged."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.export import read_export
from agent.core.record import decode
from agent.daemon_cli import init_agent
from firmware_shim import Shim

ROOT = Path(__file__).resolve().parents[2]


class Daemon:
    def __init__(self, directory: Path) -> None:
        self.paths = init_agent(device_id="shim-e2e", directory=directory, quiet=True)
        self.address = f"unix:{self.paths.state_dir / 'agent.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        sock = self.paths.state_dir / "agent.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(self.paths.config), "--log-level", "WARNING"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "daemon socket did not appear"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def export(self) -> list[dict]:
        out = self.paths.config.parent / "export.vt"
        subprocess.run(
            [sys.executable, "-m", "agent.cli", "agent", "export", "--config", str(self.paths.config), "-o", str(out)],
            cwd=ROOT, check=True, capture_output=True,
        )
        _, items = read_export(out.read_bytes())
        return [decode(raw) for _, records in items for raw in records]


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    directory = Path(tempfile.mkdtemp(prefix="vt-e2e-"))  # short: AF_UNIX path limit
    d = Daemon(directory)
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_shim_to_real_agent_across_restart(daemon: Daemon) -> None:
    daemon.start()
    shim = Shim(agent=daemon.address, backoff_min_ms=5, backoff_max_ms=50, check_deadline_ms=5000,
                fail_policy={"tcu.door_*": "closed"})
    shim.start()
    try:
        for i in range(50):
            shim.record("t.rec", src="app", st=200, i=i)
        shim.update({"vehicle.speed": 0.0})
        first = shim.check("tcu.door_unlock", {"door": "driver"}, "app")
        assert first.source == "agent" and first.action in ("allow", "alert", "block", "defer")
        assert isinstance(first.seq, int)

        daemon.stop()
        for i in range(50, 100):
            shim.record("t.rec", src="app", st=200, i=i)
        down = shim.check("tcu.door_unlock", {"door": "driver"}, "app", deadline_ms=300)
        assert (down.source, down.action) == ("fallback", "block")

        daemon.start()
        for i in range(100, 150):
            shim.record("t.rec", src="app", st=200, i=i)
        assert shim.flush(5000)
        last = shim.check("tcu.horn", {}, "app")
        assert last.source == "agent"  # ordered after every record above on one connection
    finally:
        shim.close()
        daemon.stop()

    records = daemon.export()
    mine = [r for r in records if r.get("api") == "t.rec"]
    assert [r["x"]["i"] for r in mine] == list(range(150))
    assert mine[0]["src"] == {"id": "app"} and mine[0]["kind"] == "api"
    seqs = [r["seq"] for r in mine]
    assert seqs == sorted(seqs)
    fallbacks = [r for r in records if r.get("api") == "shim.check_fallback"]
    assert len(fallbacks) == 1 and fallbacks[0]["sub"] == "tcu.door_unlock" and fallbacks[0]["st"] == "block"
    cmds = [r["api"] for r in records if r.get("kind") == "cmd"]
    assert cmds == ["tcu.door_unlock", "tcu.horn"]
