"""End to end with real processes: simulated devices → agent daemons → Mosquitto → collector → SQLite.

Broker stopped and started several times under load, and the collector killed with
SIGKILL mid-stream and restarted: every record is stored exactly once and verified, and
the agents' spools drain. A receipt signed by someone else is refused by a real agent.
Longer variant: VERITRAIL_SOAK=1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.config import load as load_agent_config
from agent.core.keys import generate_signer
from agent.core.receipt import make_receipt
from agent.spool import Spool
from agent.testing import FrameClient
from cloud_collector.store.sqlite import SQLiteStore
from tests.cloud_collector.harness import MqttProbe
from tests.mqtt_broker import Broker, wait_for

SOAK = os.environ.get("VERITRAIL_SOAK") == "1"
VT = [sys.executable, "-m", "agent.cli"]
ROOT = Path(__file__).resolve().parents[2]


def vt(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(VT + list(args), cwd=ROOT, check=True, capture_output=True, text=True, timeout=60, **kw)


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.p: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.p = subprocess.Popen(VT + self.args, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=open(self.log, "ab"), start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.p = None


class Agent:
    def __init__(self, root: Path, device_id: str, broker_port: int, collector_pub: str) -> None:
        self.dir = root / device_id
        self.device_id = device_id
        vt("agent", "init", "--device-id", device_id, "--dir", str(self.dir))
        conf = self.dir / "agent.toml"
        text = conf.read_text().replace("[rules]\n", '[rules]\nengine = "allow-all"\n', 1)
        text += (f'\n[uplink]\ncollector_public_key = "{collector_pub}"\nport = {broker_port}\n'
                 f'batch_linger_ms = 200\nreceipt_timeout_s = 3.0\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n')
        conf.write_text(text)
        self.config = load_agent_config(conf)
        self.proc = Proc(["agent", "run", "--config", str(conf)], self.dir / "agent.log")
        self.sent: list[int] = []

    def start(self) -> "Agent":
        self.proc.start()
        wait_for(lambda: self.config.socket_path.exists(), 20, f"{self.device_id} socket")
        return self

    def status(self) -> dict:
        return json.loads(vt("agent", "status", "--config", str(self.dir / "agent.toml"), "--json").stdout)

    def feed(self, n: int, pause_every: int = 50) -> None:
        """A simulated charger: n OCPP MeterValues calls through the agent's socket."""
        c = FrameClient(self.config.socket_path)
        try:
            for _ in range(n):
                i = len(self.sent)
                c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "src": {"id": "csms"}, "sub": "conn-1",
                                          "st": "Accepted", "lat": 1000 + i % 97, "x": {"i": i, "wh": 10_000 + i}}})
                self.sent.append(i)
                if i % pause_every == 0:
                    assert c.call({"t": "ping", "id": i})["t"] == "pong"  # flow control: the agent keeps up
        finally:
            c.close()


@pytest.fixture
def world(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    agents: list[Agent] = []
    collector = None
    try:  # a set-up that fails half way must not leave a broker or processes behind
        cdir = tmp_path / "collector"
        out = json.loads(vt("collector", "init", "--dir", str(cdir), "--mqtt-port", str(broker.port),
                            "--api-port", "0").stdout)
        collector = Proc(["collector", "run", "--config", str(cdir / "collector.toml")], tmp_path / "collector.log")
        agents = [Agent(tmp_path, f"cp-{k:04d}", broker.port, out["public_key"]) for k in range(2)]
        for a in agents:
            vt("collector", "enroll", "--config", str(cdir / "collector.toml"), "--file", str(a.dir / "enroll.json"))
        yield broker, collector, agents, cdir / "collector.db"
    finally:
        for a in agents:
            a.proc.stop()
        if collector is not None:
            collector.stop(signal.SIGKILL)
        broker.stop()


def stored(db: Path, dev: str) -> list[dict]:
    from agent.core.record import decode
    s = SQLiteStore(str(db))
    try:
        return [dict(decode(d), _seq=seq) for seq, _, d in s.records(dev, 0, 2**62, 10**7)]
    finally:
        s.close()


def drained(agent: Agent) -> bool:
    st = agent.status()
    spool = st.get("spool", {})
    return spool.get("blocks") == 0 or (spool.get("blocks", 99) <= 1 and st.get("uplink", {}).get("inflight") == 0)


def test_exactly_once_through_broker_restarts_and_collector_kill9(world):
    broker, collector, agents, db = world
    rounds = 6 if SOAK else 3
    per_round = 2000 if SOAK else 300
    collector.start()
    for a in agents:
        a.start()
    for r in range(rounds):
        for a in agents:
            wait_for(lambda: a.status()["uplink"].get("connected"), 20, "agent connected", interval_s=0.2)
        feeders = [threading.Thread(target=a.feed, args=(per_round,)) for a in agents]
        for f in feeders:
            f.start()
        if r == 1:
            collector.stop(signal.SIGKILL)       # mid-stream: records keep coming, batches queue in the broker
            collector.start()                     # the restart races the backlog on purpose
        else:
            broker.stop()                         # outage while the devices keep recording
            for a in agents:
                wait_for(lambda: not a.status()["uplink"]["connected"], 20, "agent sees the outage", interval_s=0.2)
        for f in feeders:
            f.join(120)
        if r != 1:
            for a in agents:
                a.feed(50)                        # recorded during the outage
            broker.start()
    for a in agents:  # records still in the open range are sealed within a second, then shipped
        wait_for(lambda: sum(r.get("api") == "ocpp.MeterValues" for r in stored(db, a.device_id)) >= len(a.sent),
                 90 if SOAK else 60, f"{a.device_id} all stored", interval_s=0.5)
        wait_for(lambda: drained(a), 30, f"{a.device_id} spool drained", interval_s=0.5)
    for a in agents:
        recs = stored(db, a.device_id)
        seqs = [r["_seq"] for r in recs]
        assert seqs == list(range(len(seqs))), "stored seqs are contiguous from 0: nothing lost, nothing twice"
        sent_i = [r["x"]["i"] for r in recs if r.get("api") == "ocpp.MeterValues"]
        assert sorted(sent_i) == a.sent, "every simulated call stored exactly once"
        dev = SQLiteStore(str(db)).device(a.device_id)
        assert dev["next_seq"] == len(seqs) and dev["pending_checkpoints"] == 0
        assert a.status()["uplink"]["counts"]["reconnects"] >= rounds - 1  # the outages really happened
    counters = SQLiteStore(str(db)).counters()
    assert counters.get("receipts_sent", 0) >= 1
    assert not {k: v for k, v in counters.items() if k.startswith("rejected.")}, counters


def test_receipt_forged_by_someone_else_is_refused_by_the_agent(world):
    broker, collector, agents, db = world
    a = agents[0].start()                        # collector not running: nothing is receipted
    a.feed(20)
    spool = Spool(a.config.spool_path, readonly=True)
    try:
        wait_for(lambda: spool.unacked(None, 1 << 20), 10, "sealed blocks")
        last = spool.unacked(None, 1 << 22)[-1]
    finally:
        spool.close()
    # the receipt must reach a subscribed agent: wait until it is connected, and publish
    # again now and then (between CONNACK and SUBACK a message to the topic is not delivered)
    wait_for(lambda: a.status()["uplink"].get("connected"), 20, "agent connected", interval_s=0.2)
    probe = MqttProbe(broker.port, "attacker")
    forged = make_receipt(generate_signer(), a.device_id, last.last, last.cp, last.hash)
    sent_at = [0.0]

    def refused() -> bool:
        if a.status()["uplink"]["drops"].get("receipt_refused:bad_signature", 0) >= 1:
            return True
        if time.monotonic() - sent_at[0] > 2.0:
            probe.publish(f"vt/v1/dev/{a.device_id}/rcpt", forged)
            sent_at[0] = time.monotonic()
        return False

    try:
        wait_for(refused, 20, "forged receipt refused", interval_s=0.3)
    finally:
        probe.close()
    assert a.status()["spool"]["blocks"] >= 1  # nothing deleted
    collector.start()                            # the genuine collector's receipts do delete
    # the agent resends at its next receipt timeout (3 s, doubling while nothing is receipted)
    wait_for(lambda: drained(a), 60, "drained by genuine receipts", interval_s=0.5)
