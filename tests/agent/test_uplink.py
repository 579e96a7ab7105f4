"""Uplink against a real Mosquitto and the real collector; spool = agent.testing.FakeSpool."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from agent.core.keys import generate_signer
from agent.core.receipt import make_control, make_receipt
from agent.errors import ConfigError
from agent.testing import FakeSpool
from agent.uplink import Uplink, UplinkConfig
from tests.cloud_collector.harness import CollectorThread, MqttProbe
from tests.mqtt_broker import Broker, until

DEV = "tcu-0001"


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def spool():
    return FakeSpool(DEV)


@pytest.fixture
def collector(tmp_path, broker, spool):
    c = CollectorThread(tmp_path, broker.port)
    c.enroll_spool(DEV, spool)
    c.start()
    yield c
    c.stop()


def make_uplink(port, spool, collector_hex, **kw):
    controls: list[tuple[str, bytes]] = []
    cfg = UplinkConfig(collector_public_key=collector_hex, port=port, batch_linger_ms=kw.pop("linger", 50),
                       reconnect_min_s=0.1, reconnect_max_s=0.5, **kw)
    up = Uplink(cfg, spool, DEV, on_control=lambda k, b: controls.append((k, b)),
                status=lambda: {"version": "test", "boot": 1, "spool": {"bytes": 10, "max_bytes": 100}})
    up.controls = controls
    return up


class Running:
    def __init__(self, uplink):
        self.uplink = uplink

    async def __aenter__(self):
        self.task = asyncio.create_task(self.uplink.run())
        await until(lambda: self.uplink.state()["connected"], what="uplink connected")
        return self.uplink

    async def __aexit__(self, *exc):
        self.uplink.stop()
        await asyncio.wait_for(self.task, 15)


def test_config_is_validated():
    key = generate_signer().public_bytes().hex()
    with pytest.raises(ConfigError, match="collector_public_key"):
        UplinkConfig.from_table({"host": "x"})
    with pytest.raises(ConfigError, match="session_expiry_s"):
        UplinkConfig(collector_public_key=key, session_expiry_s=60)
    with pytest.raises(ConfigError, match="unknown option"):
        UplinkConfig.from_table({"collector_public_key": key, "hots": "x"})
    with pytest.raises(ConfigError, match="max_batch_bytes"):
        UplinkConfig(collector_public_key=key, max_batch_bytes=10**7)
    assert UplinkConfig.from_table({"collector_public_key": key, "port": 8883}).port == 8883


async def test_spool_drains_through_broker_and_collector(broker, spool, collector):
    spool.chain(500, per_checkpoint=20)
    up = make_uplink(broker.port, spool, collector.public_hex)
    async with Running(up):
        await until(lambda: not spool.blocks, what="spool drained")
        spool.chain(30, per_checkpoint=7)
        up.notify()
        await until(lambda: not spool.blocks, what="spool drained again")
    assert collector.seqs(DEV) == list(range(530))
    st = up.state()
    assert st["counts"]["receipts_applied"] >= 1 and st["drops"] == {}
    assert st["counts"]["batches_sent"] < 530 // 20  # several checkpoints per batch


async def test_forged_and_misaddressed_receipts_are_refused(broker, spool, tmp_path):
    real = generate_signer()
    blocks = spool.chain(8, per_checkpoint=4)
    up = make_uplink(broker.port, spool, real.public_bytes().hex())
    attacker = MqttProbe(broker.port, "attacker")
    try:
        async with Running(up):
            last = blocks[-1]
            attacker.publish(f"vt/v1/dev/{DEV}/rcpt", make_receipt(generate_signer(), DEV, last.last, last.cp, last.hash))
            attacker.publish(f"vt/v1/dev/{DEV}/rcpt", make_receipt(real, "tcu-9999", last.last, last.cp, last.hash))
            attacker.publish(f"vt/v1/dev/{DEV}/rcpt", b"\xa0garbage")
            await until(lambda: sum(up.state()["drops"].values()) >= 3, what="3 refusals")
            assert len(spool.blocks) == 2  # nothing deleted
            drops = up.state()["drops"]
            assert drops["receipt_refused:bad_signature"] == 1 and drops["receipt_refused:malformed"] == 2
            # the genuine receipt deletes
            attacker.publish(f"vt/v1/dev/{DEV}/rcpt", make_receipt(real, DEV, last.last, last.cp, last.hash))
            await until(lambda: not spool.blocks, what="genuine receipt applied")
    finally:
        attacker.close()


async def test_control_messages_are_verified_before_delivery(broker, spool):
    real = generate_signer()
    up = make_uplink(broker.port, spool, real.public_bytes().hex())
    sender = MqttProbe(broker.port, "ops")
    try:
        async with Running(up):
            topic = f"vt/v1/dev/{DEV}/ctl"
            sender.publish(topic, make_control(generate_signer(), DEV, "rules", b"evil", 1))
            sender.publish(topic, make_control(real, DEV, "rules", b"bundle-v2", 2))
            sender.publish(topic, make_control(real, DEV, "rules", b"bundle-v2", 2))  # repeated id
            await until(lambda: up.state()["counts"].get("control_repeated") == 1, what="control processed")
            assert up.controls == [("rules", b"bundle-v2")]
            assert up.state()["drops"]["control_refused:bad_signature"] == 1
    finally:
        sender.close()


async def test_status_is_retained_online_then_offline(broker, spool):
    up = make_uplink(broker.port, spool, generate_signer().public_bytes().hex())
    async with Running(up):
        pass
    watcher = MqttProbe(broker.port, "watcher")
    try:
        watcher.subscribe(f"vt/v1/dev/{DEV}/status")
        await until(lambda: watcher.messages, what="retained status")
        topic, payload, retained = watcher.messages[-1]
        doc = json.loads(payload)
        assert retained and doc["state"] == "offline" and doc["spool"]["max_bytes"] == 100
    finally:
        watcher.close()


async def test_broker_restarts_lose_nothing_and_duplicate_nothing(broker, spool, collector):
    up = make_uplink(broker.port, spool, collector.public_hex, receipt_timeout_s=2.0)
    async with Running(up):
        for round_ in range(3):
            spool.chain(200, per_checkpoint=10)
            up.notify()
            broker.stop()
            spool.chain(50, per_checkpoint=10)   # sealed while the broker is down
            broker.start()
            await until(lambda: not spool.blocks, timeout_s=30, what=f"drained after restart {round_}")
    assert collector.seqs(DEV) == list(range(750))
    assert up.state()["counts"]["reconnects"] >= 3


async def test_without_receipts_the_uplink_resends_after_the_timeout(broker, spool, tmp_path):
    spool.chain(40, per_checkpoint=10)
    up = make_uplink(broker.port, spool, generate_signer().public_bytes().hex(), receipt_timeout_s=0.5)
    async with Running(up):
        await until(lambda: up.state()["counts"].get("resend_timeouts", 0) >= 2, what="resends")
        assert len(spool.blocks) == 4  # nothing deleted without a receipt
        assert up.state()["counts"]["checkpoints_sent"] >= 8


async def test_batches_respect_the_brokers_maximum_packet_size(tmp_path, spool):
    with Broker(tmp_path / "small", extra_conf="max_packet_size 3000\n") as b:
        spool.chain(40, per_checkpoint=10)
        spool.sealer.append({"kind": "api", "api": "big", "x": {"blob": os.urandom(8000)}}, 1, 2)
        spool._keep(spool.sealer.seal(mono=1, wall=2, reason="size"))  # 8 KB of random bytes: cannot fit
        c = CollectorThread(tmp_path, b.port)
        from agent.core.export import Trust, enrollment_doc
        s = spool.sealer.signer
        c.store.enroll(Trust.from_enrollment(enrollment_doc(DEV, [(s.kid, s.alg, s.public_bytes())], spool.fs_k0)), 0)
        c.start()
        try:
            up = make_uplink(b.port, spool, c.public_hex)
            async with Running(up):
                await until(lambda: up.state()["drops"].get("oversize_checkpoint") == 1, what="oversize counted")
                await until(lambda: len(c.seqs(DEV)) == 40, what="the rest delivered")
                assert up.state()["max_batch_bytes"] < 3000
        finally:
            c.stop()
