"""Collector over a real Mosquitto: hostile payloads are rejected and counted, nothing stored, still up."""

from __future__ import annotations

import warnings
import zlib

import pytest

with warnings.catch_warnings():  # starlette warns about its httpx-based test client at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient as HttpClient

from agent.core import batch
from agent.core.keys import PublicKey
from agent.core.receipt import open_receipt
from cloud_collector.api import create_app
from cloud_collector.store.sqlite import SQLiteStore
from tests.cloud_collector.chains import DeviceChain
from tests.cloud_collector.harness import CollectorThread, MqttProbe
from tests.mqtt_broker import Broker, wait_for

DEV, OTHER = "cp-0001", "cp-0002"


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def setup(tmp_path, broker):
    col = CollectorThread(tmp_path, broker.port)
    dev, other = DeviceChain(DEV), DeviceChain(OTHER)
    col.store.enroll(dev.trust(), 0)
    col.store.enroll(other.trust(), 0)
    col.start()
    probe = MqttProbe(broker.port, "probe")
    yield col, dev, other, probe
    probe.close()
    col.stop()


def up(dev):
    return f"vt/v1/dev/{dev}/up"


def test_batch_is_stored_and_a_verifiable_receipt_comes_back(setup):
    col, dev, _, probe = setup
    probe.subscribe(f"vt/v1/dev/{DEV}/rcpt")
    items = [dev.cp(5), dev.cp(3)]
    probe.publish(up(DEV), batch.encode(DEV, items))
    wait_for(lambda: probe.messages, 10, "receipt")
    r = open_receipt(probe.messages[0][1], PublicKey(col.signer.alg, col.signer.public_bytes()), DEV)
    assert (r.upto, r.cp) == (7, 1)
    assert col.seqs(DEV) == list(range(8))


def test_hostile_payloads_are_rejected_counted_and_not_stored(setup):
    col, dev, other, probe = setup
    good = [dev.cp(4)]
    payload = batch.encode(DEV, good)
    msg, recs = dev.cp(2)
    forged_sig = (msg[:-2] + bytes(b ^ 1 for b in msg[-2:]), recs)
    stranger = DeviceChain("cp-0001")  # same id, keys nobody enrolled
    zbomb = zlib.compressobj(9)
    bomb = b"\x01" + b"".join(zbomb.compress(bytes(1 << 20)) for _ in range(100)) + zbomb.flush()
    attacks = {
        "truncated": payload[: len(payload) // 2],
        "garbage": b"\x00\x93\x01\x02",
        "unknown codec": b"\x09" + payload[1:],
        "decompression bomb": bomb,
        "forged signature": batch.encode(DEV, [forged_sig], codec=0),
        "foreign key": batch.encode(DEV, [stranger.cp(3)]),
        "cross-device": batch.encode(DEV, [other.cp(3)]),
    }
    for name, p in attacks.items():
        probe.publish(up(DEV), p)
    probe.publish("vt/v1/dev/cp-9999/up", payload)          # unknown device
    probe.publish("vt/v1/dev/a/b/up", payload)              # not our topic shape: not subscribed at all
    wait_for(lambda: sum(v for k, v in col.counters().items() if k.startswith("rejected.")) >= 8, 15, "rejections")
    c = col.counters()
    assert c["rejected.malformed"] >= 3 and c["rejected.too_large"] == 1
    assert c["rejected.bad_signature"] == 1 and c["rejected.unknown_key"] == 1
    assert c["rejected.device_mismatch"] == 1 and c["rejected.unknown_device"] == 1
    assert col.seqs(DEV) == [] and col.store.device(DEV)["checkpoints"] == 0
    # still up: the genuine batch goes through, then a replay of it is a duplicate
    probe.publish(up(DEV), payload)
    wait_for(lambda: col.seqs(DEV) == [0, 1, 2, 3], 10, "genuine batch stored")
    probe.publish(up(DEV), payload)
    wait_for(lambda: col.counters().get("duplicates") == 1, 10, "replay seen as duplicate")
    assert col.seqs(DEV) == [0, 1, 2, 3]


def test_oversized_message_is_refused_by_the_broker_or_collector(setup, tmp_path):
    col, dev, _, probe = setup
    big = MqttProbe(col.config.mqtt_port, "oversize")
    try:
        big.c.publish(up(DEV), b"\x00" + bytes(300 * 1024), qos=1)  # over the broker's message_size_limit
        wait_for(lambda: big.disconnects or big.acks, 10, "broker refusal")
    finally:
        big.close()
    probe.publish(up(DEV), batch.encode(DEV, [dev.cp(1)]))
    wait_for(lambda: col.seqs(DEV) == [0], 10, "later batch still processed")
    assert col.counters().get("messages", 0) == 1  # the oversize one never reached us


def test_status_feeds_clock_skew_and_spool_pressure_alerts(setup):
    import json
    import time
    col, _, _, probe = setup
    doc = {"state": "online", "wall_ms": int(time.time() * 1000) + 3_600_000, "boot": 3,
           "spool": {"bytes": 95, "max_bytes": 100}}
    probe.publish(f"vt/v1/dev/{DEV}/status", json.dumps(doc).encode(), retain=True)
    wait_for(lambda: {"clock_skew", "spool_pressure"} <= {a["kind"] for a in col.store.alerts(DEV, 10)}, 10, "alerts")
    assert col.store.device(DEV)["status"]["boot"] == 3


def test_read_api(setup, tmp_path):
    col, dev, _, probe = setup
    probe.publish(up(DEV), batch.encode(DEV, [dev.cp(3), dev.cp(1, kind="cmd", v="block", r=["r1"], why="security")]))
    wait_for(lambda: len(col.seqs(DEV)) == 4, 10, "stored")
    http = HttpClient(create_app(lambda: SQLiteStore(col.config.store)))
    devices = http.get("/api/devices").json()["devices"]
    assert {d["dev"] for d in devices} == {DEV, OTHER}
    d = http.get(f"/api/devices/{DEV}").json()
    assert d["next_seq"] == 4 and d["last_checkpoint"]["cp"] == 1
    recs = http.get(f"/api/devices/{DEV}/records", params={"from": 1, "to": 2}).json()["records"]
    assert [r["seq"] for r in recs] == [1, 2] and recs[0]["record"]["api"] == "ocpp.MeterValues"
    assert http.get(f"/api/devices/{DEV}/records", params={"from": "x"}).status_code == 400
    assert http.get("/api/devices/nope").status_code == 404
    alerts = http.get("/api/alerts").json()["alerts"]
    assert any(a["kind"] == "verdict_block" and a["seq_first"] == 3 for a in alerts)
    m = http.get("/api/metrics").json()
    assert m["counters"]["records"] == 4 and "rejected" in m


def test_silent_device_and_open_gap_raise_alerts(tmp_path, broker):
    col = CollectorThread(tmp_path, broker.port, silent_after_s=1, gap_timeout_s=1)
    dev = DeviceChain(DEV)
    col.store.enroll(dev.trust(), 0)
    col.start()
    probe = MqttProbe(broker.port, "probe2")
    try:
        dev.cp(1)  # cp 0 never sent
        probe.publish(up(DEV), batch.encode(DEV, [dev.cp(1)]))
        wait_for(lambda: {"silent", "gap"} <= {a["kind"] for a in col.store.alerts(DEV, 10)}, 15, "silent + gap alerts")
        gap = [a for a in col.store.alerts(DEV, 10) if a["kind"] == "gap"][0]
        assert gap["detail"]["expected_cp"] == 0 and gap["detail"]["lowest_pending_cp"] == 1
    finally:
        probe.close()
        col.stop()


def test_two_workers_on_the_shared_subscription_store_everything_once(tmp_path, broker):
    from agent.core.keys import generate_signer
    signer = generate_signer()
    workers = [CollectorThread(tmp_path, broker.port, signer=signer, worker=i, workers=2) for i in range(2)]
    dev = DeviceChain(DEV)
    workers[0].store.enroll(dev.trust(), 0)
    for w in workers:
        w.start()
    probe = MqttProbe(broker.port, "probe3")
    try:
        for _ in range(30):
            probe.publish(up(DEV), batch.encode(DEV, [dev.cp(4)]))
        wait_for(lambda: len(workers[0].seqs(DEV)) == 120, 20, "all batches stored")
        c = workers[0].counters()
        assert c["checkpoints"] == 30 and c.get("pending", 0) >= 0
        assert workers[0].seqs(DEV) == list(range(120))
    finally:
        probe.close()
        for w in workers:
            w.stop()
