"""The uplink with its paho client on the asyncio loop (agent.uplink_loop.LoopNetwork), as fleets
run it: real Mosquitto, real collector, the socket above descriptor 1024 (where paho's own
select()-based thread cannot go), no extra thread, broker restarts survived."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

from agent.testing import FakeSpool
from agent.uplink import Uplink, UplinkConfig
from agent.uplink_loop import LoopNetwork
from tests.cloud_collector.harness import CollectorThread, MqttProbe
from tests.mqtt_broker import Broker, until as _until

DEV = "sim-loop-0001"


def until(cond, timeout_s: float = 20.0, what: str = "condition"):
    return _until(cond, timeout_s, what)


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
    c.start()          # before the descriptors below: the collector runs paho's own thread
    yield c
    c.stop()


@pytest.fixture
def high_fds():
    """Hold ~1100 descriptors so that the next sockets are numbered above FD_SETSIZE (1024)."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    yield held
    for fd in held:
        os.close(fd)


def make_uplink(port, spool, collector_hex, network, **kw):
    cfg = UplinkConfig(collector_public_key=collector_hex, port=port, batch_linger_ms=50,
                       reconnect_min_s=0.1, reconnect_max_s=0.5, **kw)
    return Uplink(cfg, spool, DEV, on_control=lambda k, b: None, status=lambda: {"version": "test"},
                  network=network)


async def test_loop_network_delivers_above_fd_1024_without_a_thread(broker, spool, collector, high_fds):
    net = LoopNetwork(misc_interval_s=0.5)
    up = make_uplink(broker.port, spool, collector.public_hex, net)
    spool.chain(300, per_checkpoint=10)
    task = asyncio.create_task(up.run())
    try:
        await until(lambda: up.state()["connected"], what="connected")
        assert up.client is not None and up.client.socket().fileno() > 1024
        assert not [t.name for t in threading.enumerate() if t.name == f"paho-mqtt-client-{DEV}"]   # no network thread
        await until(lambda: not spool.blocks, what="spool drained")
        spool.chain(40, per_checkpoint=8)
        up.notify()
        await until(lambda: not spool.blocks, what="drained again")
    finally:
        up.stop()
        await asyncio.wait_for(task, 15)
    assert collector.seqs(DEV) == list(range(340))
    assert up.state()["drops"] == {} and net.connect_errors == 0


async def test_loop_network_reconnects_after_broker_restarts(broker, spool, collector):
    net = LoopNetwork(misc_interval_s=0.2)
    up = make_uplink(broker.port, spool, collector.public_hex, net, receipt_timeout_s=2.0, keepalive_s=5)
    task = asyncio.create_task(up.run())
    try:
        await until(lambda: up.state()["connected"], what="connected")
        for round_ in range(2):
            spool.chain(100, per_checkpoint=10)
            up.notify()
            broker.stop()
            await until(lambda: not up.state()["connected"], what=f"disconnect seen {round_}")
            spool.chain(30, per_checkpoint=10)      # sealed while the broker is down
            broker.start()
            await until(lambda: not spool.blocks, timeout_s=30, what=f"drained after restart {round_}")
    finally:
        up.stop()
        await asyncio.wait_for(task, 15)
    assert collector.seqs(DEV) == list(range(260))
    assert up.state()["counts"]["reconnects"] >= 2 and net.connect_attempts >= 3


async def test_stop_publishes_offline_status_and_closes_the_socket(broker, spool):
    net = LoopNetwork()
    up = make_uplink(broker.port, spool, FakeSpool("x").sealer.signer.public_bytes().hex(), net)
    task = asyncio.create_task(up.run())
    await until(lambda: up.state()["connected"], what="connected")
    up.stop()
    await asyncio.wait_for(task, 10)
    assert up.client is not None and up.client.socket() is None
    watcher = MqttProbe(broker.port, "watcher")
    try:
        watcher.subscribe(f"vt/v1/dev/{DEV}/status")
        await until(lambda: watcher.messages, what="retained status")
        assert json.loads(watcher.messages[-1][1])["state"] == "offline"
    finally:
        watcher.close()


async def test_unreachable_broker_is_retried_and_counted(spool):
    from tests.mqtt_broker import free_port
    net = LoopNetwork()
    up = make_uplink(free_port(), spool, FakeSpool("x").sealer.signer.public_bytes().hex(), net)
    task = asyncio.create_task(up.run())
    try:
        # the network sees a refusal a moment before the uplink counts it: wait for both
        await until(lambda: net.connect_errors >= 3 and up.state()["counts"]["connect_failures"] >= 3,
                    what="three refused connects, counted by the uplink")
        assert not up.state()["connected"]
    finally:
        up.stop()
        await asyncio.wait_for(task, 10)


def test_misc_interval_is_validated():
    with pytest.raises(ValueError, match="misc_interval_s"):
        LoopNetwork(misc_interval_s=0)
