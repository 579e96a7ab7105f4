"""Signed rule bundles reach a running agent on its `ctl` topic (through a real broker):
a good one is installed and recorded, a tampered one is refused with a recorded reason and
the old bundle stays in force."""

from __future__ import annotations

import time

from agent.core.keys import generate_signer
from agent.core.receipt import make_control
from agent.core.record import decode
from agent.rules import default_pack_paths
from agent.rules.bundle import build_bundle
from agent.testing import AgentHarness
from tests.cloud_collector.harness import MqttProbe
from tests.mqtt_broker import Broker


def _wait(cond, what: str, deadline_s: float = 20.0):
    end = time.monotonic() + deadline_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _agent_records(h: AgentHarness) -> list[dict]:
    from agent.spool import Spool
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        return [r for b in spool.iter_blocks() for r in map(decode, b.records) if r.get("kind") == "agent"]
    finally:
        spool.close()


def test_bundle_on_ctl_is_installed_and_a_tampered_one_refused(tmp_path):
    fleet, collector = generate_signer(), generate_signer()
    texts = {p.name: p.read_text() for p in default_pack_paths("charger")}
    good = build_bundle(texts, version=5, signer=fleet, created_ms=1)
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0x01
    with Broker(tmp_path / "broker") as broker:
        h = AgentHarness(tmp_path / "a", device_id="cp-roll", rules__engine="rules",
                         rules__fleet_public_key=fleet.public_bytes().hex(),
                         uplink__collector_public_key=collector.public_bytes().hex(),
                         uplink__port=broker.port, uplink__batch_linger_ms=50).start()
        probe = MqttProbe(broker.port, "fleet-ops")
        try:
            c = h.client()
            _wait(lambda: c.call({"t": "status", "id": 1})["s"]["uplink"].get("connected"), "uplink connected")
            topic = "vt/v1/dev/cp-roll/ctl"
            probe.publish(topic, make_control(collector, "cp-roll", "rules", bytes(tampered), 1))
            _wait(lambda: any(r["api"] == "agent.rules_rejected" for r in _agent_records(h)), "rejection recorded")
            probe.publish(topic, make_control(collector, "cp-roll", "rules", good, 2))
            _wait(lambda: any(r["api"] == "agent.rules" for r in _agent_records(h)), "installation recorded")
            # a replay of the same bundle (new control id) is a downgrade/replay: refused, v5 stays
            probe.publish(topic, make_control(collector, "cp-roll", "rules", good, 3))
            _wait(lambda: sum(r["api"] == "agent.rules_rejected" for r in _agent_records(h)) == 2, "replay refused")
            v = c.call({"t": "chk", "id": 7, "c": {"cmd": "ocpp.Reset", "args": {"type": "Soft"}, "src": {"id": "csms"}}})
            assert v["rb"] == 5  # commands are judged by the installed bundle
        finally:
            probe.close()
            h.stop()
    recs = _agent_records(h)
    installed = [r for r in recs if r["api"] == "agent.rules"]
    rejected = [r for r in recs if r["api"] == "agent.rules_rejected"]
    assert [r["x"]["version"] for r in installed] == [5]
    assert len(rejected) == 2 and all(r["x"]["reason"] for r in rejected)
    assert "not greater" in rejected[1]["x"]["reason"]
