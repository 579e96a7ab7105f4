"""`veritrail bench footprint [--quick] --json`: what the agent daemon costs a device.

The real daemon (`veritrail agent run`, default config, rules on, its own process) ships to a
real Mosquitto (own config, free port) and a real collector (`veritrail collector run`, own
process) that stores and receipts. The load comes through the real shim (CPython, its
background thread) from this process:

- ``idle``: nothing but the daemon's own heartbeats: the baseline of the same run.
- ``typical``: 50 API calls/s (an OCPP MeterValues-sized record each), a twin update each
  second, 1 remote command/min through ``check()``.
- ``burst``: 1000 API calls/s and 2 commands/s.

For each phase, from the kernel's own counters of the daemon's pid (nothing sampled in it):
``peak_rss_mib`` (VmHWM at the end of the phase; phases run in this order, so a phase's peak
includes the ones before), ``cpu_percent_*`` ((utime+stime) delta / wall time, % of one core),
``bytes_written_per_hour_*`` (``/proc/PID/io`` write_bytes delta, scaled to an hour: what
reaches the block device, SQLite's WAL and checkpoints included) and ``wchar_per_hour_*``
(bytes passed to write(), any file system). Goals at the typical load: ≤ 40 MiB, ≤ 5 % of one
core, ≤ 50 MB/h. The knobs that trade them are in docs/device-makers.md ("Footprint").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_shim import Shim

GOALS = {"peak_rss_mib": 40.0, "cpu_percent_typical": 5.0, "bytes_written_per_hour": 50e6}
MOSQUITTO = os.environ.get("VERITRAIL_MOSQUITTO", "/usr/sbin/mosquitto")
VT = [sys.executable, "-m", "agent.cli"]
ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"footprint bench: timed out waiting for {what}")
        time.sleep(0.05)
    return value


def _vt(*args: str) -> str:
    return subprocess.run(VT + list(args), cwd=ROOT, check=True, capture_output=True, text=True, timeout=60).stdout


class ProcStats:
    """The kernel's counters for one pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def sample(self) -> dict[str, float]:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        io = dict(line.split(": ") for line in Path(f"/proc/{self.pid}/io").read_text().splitlines())
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines())
        return {"t": time.monotonic(), "cpu_s": (int(fields[11]) + int(fields[12])) / CLK_TCK,
                "write_bytes": int(io["write_bytes"]), "wchar": int(io["wchar"]),
                "hwm_mib": int(status["VmHWM"].split()[0]) / 1024, "rss_mib": int(status["VmRSS"].split()[0]) / 1024}


class World:
    """Broker, collector and agent daemon in a temp dir on the same file system as /var/tmp."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vt-fp-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.progress = progress

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.dir / log, "ab") as out:
            proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out)
        self.procs.append(proc)
        return proc

    def start(self) -> "World":
        if not Path(MOSQUITTO).exists():
            raise RuntimeError(f"mosquitto not found at {MOSQUITTO} (make setup installs it)")
        port = _free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"message_size_limit 262144\nlog_dest file {self.dir / 'mosquitto.log'}\n")
        self._spawn([MOSQUITTO, "-c", str(conf)], "mosquitto.err")

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False
        _wait(up, 10, "mosquitto")
        cdir = self.dir / "collector"
        pub = json.loads(_vt("collector", "init", "--dir", str(cdir), "--mqtt-port", str(port), "--api-port", "0"))
        from agent.daemon_cli import init_agent
        paths = init_agent(device_id="fp-charger", directory=self.dir / "agent", quiet=True)
        self.config = paths.config
        paths.config.write_text(paths.config.read_text() + f'\n[uplink]\nport = {port}\n'
                                f'collector_public_key = "{pub["public_key"]}"\n')
        _vt("collector", "enroll", "--config", str(cdir / "collector.toml"), "--file", str(paths.enrollment))
        self.collector_db = cdir / "collector.db"
        self._spawn(VT + ["collector", "run", "--config", str(cdir / "collector.toml")], "collector.log")
        self.agent = self._spawn(VT + ["agent", "run", "--config", str(paths.config), "--log-level", "WARNING"],
                                 "agent.log")
        self.sock = paths.state_dir / "agent.sock"
        _wait(lambda: self.sock.exists() or self.agent.poll() is not None, 30, "agent socket")
        if self.agent.poll() is not None:
            raise RuntimeError(f"agent exited: {(self.dir / 'agent.log').read_text()[-1000:]}")
        return self

    def status(self) -> dict[str, Any]:
        return json.loads(_vt("agent", "status", "--config", str(self.config), "--json"))

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _load(shim: Shim, seconds: float, calls_per_s: int, checks_per_min: float, counts: dict[str, int]) -> None:
    """Paced load: API calls in 10 ms slots, a twin update each second, commands spread out."""
    start = time.monotonic()
    next_check = start + min(60.0 / checks_per_min / 2 if checks_per_min else 0.0, seconds / 4)
    next_twin = start
    slot = 0.01
    per_slot = calls_per_s * slot
    owed = 0.0
    while (now := time.monotonic()) - start < seconds:
        owed += per_slot
        while owed >= 1:
            i = counts["records"]
            shim.record("ocpp.MeterValues", src={"id": "csms", "net": "10.0.0.7"}, sub="conn-1", st="Accepted",
                        lat=900 + i % 200, connector_id=1, wh=10_000 + i, a=16.0 + (i % 10) / 10)
            counts["records"] += 1
            owed -= 1
        if now >= next_twin:
            shim.update({"tx.active": True, "connector.1.current_a": 16.0, "connector.1.cp_state": "C"})
            next_twin += 1.0
        if checks_per_min and now >= next_check:
            shim.check("ocpp.UnlockConnector", {"connector_id": 1}, "csms")
            counts["checks"] += 1
            next_check += 60.0 / checks_per_min
        time.sleep(max(0.0, start + (slot * (1 + int((time.monotonic() - start) / slot))) - time.monotonic()))


def _phase(stats: ProcStats, name: str, run: Callable[[], None]) -> dict[str, float]:
    before = stats.sample()
    run()
    after = stats.sample()
    wall = after["t"] - before["t"]
    return {f"cpu_percent_{name}": round(100 * (after["cpu_s"] - before["cpu_s"]) / wall, 2),
            f"bytes_written_per_hour_{name}": round((after["write_bytes"] - before["write_bytes"]) * 3600 / wall),
            f"wchar_per_hour_{name}": round((after["wchar"] - before["wchar"]) * 3600 / wall),
            f"peak_rss_mib_{name}": round(after["hwm_mib"], 2), f"rss_mib_end_{name}": round(after["rss_mib"], 2),
            f"seconds_{name}": round(wall, 1)}


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    idle_s, typical_s, burst_s = (6.0, 30.0, 8.0) if quick else (60.0, 600.0, 60.0)
    world = World(progress).start()
    counts = {"records": 0, "checks": 0}
    try:
        stats = ProcStats(world.agent.pid)
        time.sleep(2.0)  # start-up (rules compile, first checkpoint) is not what a device pays per hour
        progress(f"footprint: idle {idle_s:.0f} s")
        out = _phase(stats, "idle", lambda: time.sleep(idle_s))
        shim = Shim(agent=f"unix:{world.sock}", check_deadline_ms=2000, ring_frames=4096, ring_bytes=1 << 20)
        shim.start()
        try:
            progress(f"footprint: typical {typical_s:.0f} s (50 calls/s, 1 command/min)")
            out.update(_phase(stats, "typical", lambda: _load(shim, typical_s, 50, 1, counts)))
            typical_counts = dict(counts)
            progress(f"footprint: burst {burst_s:.0f} s (1000 calls/s, 2 commands/s)")
            out.update(_phase(stats, "burst", lambda: _load(shim, burst_s, 1000, 120, counts)))
            shim.flush(10_000)
            shim_stats = shim.stats()
        finally:
            shim.close()
        status = world.status()
        up = status.get("uplink") or {}
    finally:
        world.close()
    out["peak_rss_mib"] = out.pop("peak_rss_mib_typical")
    out["bytes_written_per_hour"] = out.pop("bytes_written_per_hour_typical")
    out.update({
        "quick": quick,
        "records_typical": typical_counts["records"], "checks_typical": typical_counts["checks"],
        "records_total": counts["records"], "checks_total": counts["checks"],
        "shim_drops": sum(shim_stats["dropped"].values()),
        "uplink_connected": bool(up.get("connected")),
        "uplink_records_sent": (up.get("counts") or {}).get("records_sent", 0),
        "uplink_receipts_applied": (up.get("counts") or {}).get("receipts_applied", 0),
        **{f"goal_{k}": v for k, v in GOALS.items()},
        "meets_goals": all(out[k] <= v for k, v in GOALS.items()),
    })
    return out
