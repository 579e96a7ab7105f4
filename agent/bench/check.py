"""`veritrail bench check [--quick] --json`: the shim's `check()` round trip to a running
agent (the real daemon, `veritrail agent run`, a separate process) over its Unix socket,
next to a bare Unix-socket echo of the same frame size measured in the same run.

- ``p50_us`` / ``p99_us``: `Shim.check()` → verdict from a daemon with
  ``[spool] synchronous = "off"`` (no fsync): the protocol + rules + sealing + SQLite
  commit path without waiting for the disk.
- ``fsync_p50_us`` / ``fsync_p99_us``: the same with the default ``synchronous = "full"``:
  the agent fsyncs the `cmd` record before it answers (DESIGN §4), what a device pays.
- ``echo_p50_us`` / ``echo_p99_us``: a Python echo server in its own process; the client
  writes a frame as long as a `chk` frame and reads as many bytes back. Echo and check
  round trips alternate one by one, so noise on the shared machine hits both alike
  (``fsync_echo_*``: the echo figures of the fsync run). An echo right after a check also
  meets the daemon's leftover work (the writer thread), so ``echo_alone_*`` (echo with
  nothing else running, same run) and ``ratio_p99_to_echo_alone`` are reported beside it.
- ``fake_agent_p50_us`` / ``fake_agent_p99_us``: the same checks against FakeAgent (the
  protocol stand-in in firmware_shim.testing, own process): the shim's and framing's share.
- ``records_per_s``: `Shim.record()` calls per second from one caller while the daemon
  drains them; ``records_delivered_per_s`` runs until a `check()` sent after the last
  record is answered (the agent has taken every record); ``record_drops`` must be 0.
- ``ratio_p99_to_echo`` = p99_us / echo_p99_us (interleaved); goal ≤ 10.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_shim import Shim
from firmware_shim.framing import encode_frame

from . import stop_daemon as _stop

GOAL_RATIO = 10.0
COMMAND = "ocpp.UnlockConnector"
ARGS = {"connector_id": 1}  # as the OCPP guard passes them (snake_case)
SRC = {"id": "csms-bench", "net": "10.0.0.7"}

ECHO_SERVER = """
import socket, sys, os
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
while True:
    data = conn.recv(65536)
    if not data:
        break
    conn.sendall(data)
"""


FAKE_AGENT = """
import sys, time
from firmware_shim.testing import FakeAgent
agent = FakeAgent(sys.argv[1]).start()
print("ready", flush=True)
sys.stdin.read()  # runs until the parent closes stdin
agent.stop()
"""


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return round(p50 / 1000, 1), round(p99 / 1000, 1)


class _Echo:
    """A bare Unix-socket echo server in its own process and a client of it."""

    def __init__(self, tmp: Path, frame_bytes: int) -> None:
        path = tmp / "echo.sock"
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(path)], stdout=subprocess.PIPE, text=True)
        if self.proc.stdout is None or self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("echo server did not start")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.payload = b"x" * frame_bytes

    def round_trip_ns(self) -> int:
        sock, payload, want = self.sock, self.payload, len(self.payload)
        t0 = time.perf_counter_ns()
        sock.sendall(payload)
        got = 0
        while got < want:
            got += len(sock.recv(65536))
        return time.perf_counter_ns() - t0

    def close(self) -> None:
        if getattr(self, "sock", None) is not None:
            self.sock.close()
        self.proc.kill()
        self.proc.wait()


def _fake_checks(n: int, tmp: Path) -> tuple[float, float]:
    """The same checks against FakeAgent (testing stand-in, own process): the shim and
    framing share of the round trip, with no rules, ledger or SQLite behind it."""
    address = f"unix:{tmp / 'fake.sock'}"
    proc = subprocess.Popen([sys.executable, "-c", FAKE_AGENT, address], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("fake agent did not start")
        shim = Shim(agent=address, check_deadline_ms=5000)
        p50, p99, sources = _checks(shim, n)
        shim.close()
        if sources.get("agent:allow", 0) < n:
            raise RuntimeError(f"fake agent did not answer every check: {sources}")
        return p50, p99
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_daemon(directory: Path, synchronous: str) -> tuple[subprocess.Popen[bytes], str]:
    from agent.daemon_cli import init_agent

    paths = init_agent(device_id="bench-check", directory=directory, quiet=True)
    text = paths.config.read_text()
    if 'synchronous = "full"' not in text:
        raise RuntimeError("the rendered config has no [spool] synchronous line")
    paths.config.write_text(text.replace('synchronous = "full"', f'synchronous = "{synchronous}"'))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(paths.config), "--log-level", "WARNING"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
    )
    sock_path = paths.state_dir / "agent.sock"
    deadline = time.monotonic() + 30
    while not sock_path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError("daemon socket did not appear")
        time.sleep(0.05)
    return proc, f"unix:{sock_path}"


def _checks(shim: Shim, n: int) -> tuple[float, float, dict[str, int]]:
    samples = []
    sources: dict[str, int] = {}
    for _ in range(n + n // 10):
        t0 = time.perf_counter_ns()
        verdict = shim.check(COMMAND, ARGS, SRC, "1")
        samples.append(time.perf_counter_ns() - t0)
        key = f"{verdict.source}:{verdict.action}"
        sources[key] = sources.get(key, 0) + 1
    p50, p99 = _percentiles(samples[n // 10 :])
    return p50, p99, sources


def _daemon_checks(directory: Path, synchronous: str, echo: _Echo, n: int, records: int) -> dict[str, Any]:
    """n checks against a real daemon, each followed by one echo round trip (interleaved)."""
    proc, address = _start_daemon(directory, synchronous)
    try:
        shim = Shim(agent=address, check_deadline_ms=5000, ring_frames=4096, ring_bytes=4 * 1024 * 1024)
        samples, echoes = [], []
        sources: dict[str, int] = {}
        for _ in range(n + n // 10):
            t0 = time.perf_counter_ns()
            verdict = shim.check(COMMAND, ARGS, SRC, "1")
            samples.append(time.perf_counter_ns() - t0)
            echoes.append(echo.round_trip_ns())
            key = f"{verdict.source}:{verdict.action}"
            sources[key] = sources.get(key, 0) + 1
        if sources.get("agent:allow", 0) + sources.get("agent:alert", 0) < n:
            raise RuntimeError(f"checks were not all answered by the agent: {sources}")
        p50, p99 = _percentiles(samples[n // 10 :])  # first 10 %: warm-up
        echo_p50, echo_p99 = _percentiles(echoes[n // 10 :])
        out: dict[str, Any] = {"p50_us": p50, "p99_us": p99, "echo_p50_us": echo_p50, "echo_p99_us": echo_p99,
                               "verdicts": sources}
        if records:
            start = time.perf_counter()
            for i in range(records):
                shim.record("rest.GET /v1/status", src="bench", st=200, lat=800, rq=120, rs=64, i=i)
            calls_s = time.perf_counter() - start
            last = shim.check(COMMAND, ARGS, SRC, "1")
            delivered_s = time.perf_counter() - start
            out["records_per_s"] = round(records / calls_s)
            out["records_delivered_per_s"] = round(records / delivered_s)
            out["record_drops"] = sum(shim.stats()["dropped"].values())
            out["records_check_source"] = last.source
        shim.close()
        return out
    finally:
        _stop(proc)


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    n = 2000 if quick else 20000
    n_fsync = 500 if quick else 5000
    records = 20000 if quick else 200000
    frame_bytes = len(encode_frame({"t": "chk", "id": 1, "c": {"cmd": COMMAND, "args": ARGS, "src": SRC, "sub": "1"}, "dl": 5000}))
    progress(f"bench check: {n} checks (synchronous=off), {n_fsync} (synchronous=full, on disk), "
             f"{records} records; chk frame {frame_bytes} B; each check followed by one echo")
    with tempfile.TemporaryDirectory(prefix="vt-bench-check-") as tmp:
        fake_p50, fake_p99 = _fake_checks(n, Path(tmp))
        progress(f"  check against FakeAgent (no rules/ledger): p50 {fake_p50} us, p99 {fake_p99} us")
        echo = _Echo(Path(tmp), frame_bytes)
        try:
            alone = [echo.round_trip_ns() for _ in range(n + n // 10)][n // 10:]
            alone_p50, alone_p99 = _percentiles(alone)
            progress(f"  echo alone (nothing else running): p50 {alone_p50} us, p99 {alone_p99} us")
            fast = _daemon_checks(Path(tmp) / "off", "off", echo, n, records)
            progress(f"  check, synchronous=off: p50 {fast['p50_us']} us, p99 {fast['p99_us']} us; "
                     f"echo p50 {fast['echo_p50_us']} us, p99 {fast['echo_p99_us']} us; "
                     f"records {fast['records_per_s']:,}/s (delivered {fast['records_delivered_per_s']:,}/s)")
            disk = _daemon_checks(Path(tmp) / "full", "full", echo, n_fsync, 0)
            progress(f"  check, synchronous=full (fsync): p50 {disk['p50_us']} us, p99 {disk['p99_us']} us; "
                     f"echo p50 {disk['echo_p50_us']} us, p99 {disk['echo_p99_us']} us")
        finally:
            echo.close()
    return {
        "checks": n,
        "p50_us": fast["p50_us"],
        "p99_us": fast["p99_us"],
        "echo_p50_us": fast["echo_p50_us"],
        "echo_p99_us": fast["echo_p99_us"],
        "ratio_p99_to_echo": round(fast["p99_us"] / fast["echo_p99_us"], 2),
        "ratio_p50_to_echo": round(fast["p50_us"] / fast["echo_p50_us"], 2),
        "goal_ratio": GOAL_RATIO,
        "echo_alone_p50_us": alone_p50,
        "echo_alone_p99_us": alone_p99,
        "ratio_p99_to_echo_alone": round(fast["p99_us"] / alone_p99, 2),
        "synchronous": "off",
        "fake_agent_p50_us": fake_p50,
        "fake_agent_p99_us": fake_p99,
        "fsync_checks": n_fsync,
        "fsync_p50_us": disk["p50_us"],
        "fsync_p99_us": disk["p99_us"],
        "fsync_echo_p50_us": disk["echo_p50_us"],
        "fsync_echo_p99_us": disk["echo_p99_us"],
        "records": records,
        "records_per_s": fast["records_per_s"],
        "records_delivered_per_s": fast["records_delivered_per_s"],
        "record_drops": fast["record_drops"],
        "frame_bytes": frame_bytes,
        "quick": quick,
    }
