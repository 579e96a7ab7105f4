"""The real agent daemon as a subprocess (`veritrail agent run`), for tests.

    with AgentProcess(rules_mode="enforce", tcp=True) as a:   # init in a short temp dir, start
        a.address_unix, a.address_tcp; a.stop(); a.start(); a.records()

Waits for the socket with a deadline, no sleeps to wait for things.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.core.export import read_export
from agent.core.record import decode
from agent.daemon_cli import init_agent

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _inherited() -> dict[str, str]:
    """This process's environment without systemd's notify variables (a test runner under
    systemd must not have its daemons ping the runner's manager)."""
    return {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}


def set_option(text: str, key: str, value: str) -> str:
    """Replace the first ``key = ...`` line of a rendered agent.toml (comments after it go)."""
    new, n = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text, count=1)
    if n != 1:
        raise KeyError(key)
    return new


class AgentProcess:
    def __init__(self, *, device_id: str = "proc-test", rules_mode: str = "monitor", tcp: bool = False,
                 extra_toml: str = "", options: dict[str, str] | None = None, directory: Path | None = None) -> None:
        self.dir = Path(directory or tempfile.mkdtemp(prefix="vt-p-"))  # short: AF_UNIX path limit
        self.paths = init_agent(device_id=device_id, directory=self.dir, quiet=True)
        text = self.paths.config.read_text()
        text = set_option(text, "mode", f'"{rules_mode}"')
        self.tcp_port = free_port() if tcp else 0
        text = set_option(text, "tcp_port", str(self.tcp_port))
        for key, value in (options or {}).items():
            text = set_option(text, key, value)
        self.paths.config.write_text(text + extra_toml)
        self.sock = self.paths.state_dir / "agent.sock"
        self.address_unix = f"unix:{self.sock}"
        self.address_tcp = f"tcp:127.0.0.1:{self.tcp_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "agent.log"

    @property
    def config(self) -> Path:
        return self.paths.config

    def start(self, env: dict[str, str] | None = None, timeout_s: float = 30.0) -> "AgentProcess":
        self.sock.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(self.config),
                 "--log-level", "INFO"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**_inherited(), **(env or {})})
        deadline = time.monotonic() + timeout_s
        while not self.sock.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("daemon socket did not appear")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def records(self) -> list[dict[str, Any]]:
        """Every sealed record in the spool, in order (via `veritrail agent export`)."""
        out = self.dir / "export.vt"
        subprocess.run([sys.executable, "-m", "agent.cli", "agent", "export", "--config", str(self.config),
                        "-o", str(out)], cwd=ROOT, check=True, capture_output=True)
        _, items = read_export(out.read_bytes())
        return [decode(raw) for _, records in items for raw in records]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "AgentProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
