"""Fixtures for the agent daemon tests: an initialised agent directory and real daemon processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from agent.config import AgentConfig, from_mapping
from agent.daemon_cli import init_agent
from agent.spool import Spool
from agent.testing import FrameClient

REPO = Path(__file__).resolve().parents[2]


class AgentDir:
    def __init__(self, root: Path, device_id: str = "dev-test", **overrides: object) -> None:
        self.root = root
        self.paths = init_agent(device_id=device_id, directory=root, quiet=True)
        doc = tomllib.loads(self.paths.config.read_text())
        doc["rules"] = {"engine": "allow-all"}
        for dotted, value in overrides.items():
            table, key = dotted.split("__", 1)
            doc.setdefault(table, {})[key] = value
        self.doc = doc
        self.write()

    def write(self) -> None:
        lines = []
        for table, values in self.doc.items():
            lines.append(f"[{table}]")
            for k, v in values.items():
                lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
        self.paths.config.write_text("\n".join(lines).replace("True", "true").replace("False", "false") + "\n")

    @property
    def config(self) -> AgentConfig:
        return from_mapping(self.doc, base_dir=self.root, env={}, source=str(self.paths.config))

    @property
    def socket(self) -> Path:
        return self.config.socket_path

    def spool(self) -> Spool:
        return Spool(self.config.spool_path, readonly=True)

    def start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.Popen([sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(self.paths.config),
                                 "--log-level", "WARNING"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, proc: subprocess.Popen, deadline_s: float = 30.0) -> FrameClient:
        end = time.monotonic() + deadline_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                client = FrameClient(self.socket, timeout_s=10)
                reply = client.call({"t": "ping", "id": 0})
                assert reply == {"t": "pong", "id": 0}
                return client
            except (OSError, ConnectionError):
                if time.monotonic() > end:
                    raise AssertionError("daemon did not start listening") from None
                time.sleep(0.02)

    def stop(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0, proc.stderr.read().decode()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()


@pytest.fixture
def agent_dir(tmp_path: Path) -> AgentDir:
    return AgentDir(tmp_path / "agent")


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res
