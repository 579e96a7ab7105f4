"""Fleet: 500 simulated devices (300 vehicles, 200 chargers) for 1 simulated hour against a real
Mosquitto and a real collector; every record each agent sealed is stored and verified at the
collector. ``VERITRAIL_FLEET_DEVICES`` changes the size.

The uplinks' paho clients run on the fleet's asyncio loop (``agent.uplink_loop.LoopNetwork``):
with paho's own thread per client, ``select()`` cannot watch descriptors >= 1024 and every
device whose socket landed above that silently reconnected forever (see hw_sim README)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from agent.core.export import Trust
from hw_sim.fleet import FleetConfig, run_fleet
from tests.cloud_collector.harness import CollectorThread
from tests.mqtt_broker import Broker

DEVICES = int(os.environ.get("VERITRAIL_FLEET_DEVICES", "500"))


def _workdir(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):   # the spools' fsyncs cost nothing on tmpfs
        d = shm / f"vt-fleet-{os.getpid()}-{time.monotonic_ns()}"
        d.mkdir()
        return d
    return tmp_path / "fleet"


@pytest.mark.timeout(900)
async def test_fleet_for_one_simulated_hour_every_record_stored_and_verified(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    (tmp_path / "collector").mkdir()
    try:
        collector = CollectorThread(tmp_path / "collector", broker.port, gap_timeout_s=600,
                                    silent_after_s=10_000).start()
    except BaseException:
        broker.stop()
        raise
    workdir = _workdir(tmp_path)
    vehicles = DEVICES * 3 // 5
    cfg = FleetConfig(workdir=workdir, vehicles=vehicles, chargers=DEVICES - vehicles, sim_hours=1.0, factor=60.0,
                      broker=("127.0.0.1", broker.port), collector_public_key=collector.public_hex,
                      drain_timeout_s=300)
    enrolled = []

    def enroll(dev: str, path: Path) -> None:
        collector.store.enroll(Trust.from_enrollment(json.loads(path.read_text())), int(time.time() * 1000))
        enrolled.append(dev)

    try:
        result = await run_fleet(cfg, lambda line: print(line, file=sys.stderr), enroll=enroll)
    finally:
        collector.stop()
        broker.stop()
        if str(workdir).startswith("/dev/shm/"):
            shutil.rmtree(workdir, ignore_errors=True)
    s = result.summary
    print(json.dumps({k: v for k, v in s.items() if k != "expected_seq"}), file=sys.stderr)
    assert len(enrolled) == DEVICES and s["devices"] == DEVICES and s["sim_hours"] >= 1.0
    assert s["drain"]["devices_behind"] == 0
    missing = {}
    for dev, last in s["expected_seq"].items():
        seqs = collector.seqs(dev)
        if seqs[: last + 1] != list(range(last + 1)):
            missing[dev] = (last, len(seqs))
    assert not missing, f"{len(missing)} devices not fully stored: {list(missing.items())[:5]}"
    counters = collector.counters()
    assert not any(k.startswith(("verify.fail", "fork", "bad_sig")) and v for k, v in counters.items()), counters
    assert s["records"] >= DEVICES * 3        # start record, heartbeats, traffic
