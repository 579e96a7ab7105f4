"""The daemon in-process (AgentHarness): protocol behaviour, bad input, slow and vanishing
clients, restart, status, export."""

from __future__ import annotations

import json
import socket
import struct
import time

import msgpack
import pytest

from agent.core.export import Trust, verify_stream
from agent.core.record import decode
from agent.testing import AgentHarness, AllowAllJudge, FakeAlert, FrameClient, raw_frame

from .conftest import run_cli


def _records(h: AgentHarness) -> dict[int, dict]:
    """Every durable record: in sealed blocks, or journaled (answered, sealed a moment later)."""
    from agent.spool import Spool
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        out = {decode(d)["seq"]: decode(d) for _seq, _kind, d in spool.journal()}
        out.update({decode(d)["seq"]: decode(d) for b in spool.iter_blocks() for d in b.records})
        return out
    finally:
        spool.close()


def _items(h: AgentHarness):
    from agent.spool import Spool
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        return [(b.message, b.records) for b in spool.iter_blocks()], spool.start()
    finally:
        spool.close()


def _wait(cond, what: str, deadline_s: float = 10.0):
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def judge():
    return AllowAllJudge({"tcu.door_unlock": ("block", [FakeAlert("TCU-07", "high", "vehicle moving")])})


@pytest.fixture
def harness(tmp_path, judge):
    h = AgentHarness(tmp_path / "a", engine=judge, ledger__checkpoint_interval_ms=100).start()
    yield h
    h.stop()


def test_commands_are_judged_recorded_with_verdict_and_alerts_linked(harness, judge):
    c = harness.client()
    v = c.call({"t": "chk", "id": 5, "dl": 500,
                "c": {"cmd": "tcu.door_unlock", "args": {"door": "fl"}, "src": {"id": "app"}, "sub": "VIN1"}})
    assert v["t"] == "verdict" and v["id"] == 5 and v["v"] == "block" and v["r"] == ["TCU-07"]
    assert v["why"] == "vehicle moving" and v["rb"] == 0
    assert judge.judged[-1] == {"cmd": "tcu.door_unlock", "args": {"door": "fl"}, "src": {"id": "app"}, "sub": "VIN1"}
    recs = _records(harness)  # durable before the verdict came back
    cmd = recs[v["seq"]]
    assert (cmd["kind"], cmd["api"], cmd["sub"], cmd["v"], cmd["r"], cmd["rb"]) == \
        ("cmd", "tcu.door_unlock", "VIN1", "block", ["TCU-07"], 0)
    assert cmd["x"] == {"args": {"door": "fl"}}
    alert = recs[v["seq"] + 1]
    assert alert["kind"] == "alert" and alert["x"] == {"rule": "TCU-07", "sev": "high", "cmd_seq": v["seq"]}


def test_sync_record_is_durable_when_ok_comes_and_agent_fields_are_kept_aside(harness):
    c = harness.client()
    ok = c.call({"t": "rec", "id": 1, "sync": True,
                 "r": {"api": "rest.GET /v1/status", "st": 200, "seq": 99, "kind": "cmd", "v": "allow", "x": {"a": 1}}})
    assert ok["t"] == "ok" and ok["id"] == 1
    rec = _records(harness)[ok["seq"]]
    assert rec["kind"] == "api" and "v" not in rec
    assert rec["x"] == {"a": 1, "shim_seq": 99, "shim_kind": "cmd", "shim_v": "allow"}


def test_plain_records_become_durable_within_the_checkpoint_interval(harness):
    c = harness.client()
    c.send({"t": "rec", "r": {"api": "ocpp.Heartbeat", "kind": "state"}})
    seq = c.call({"t": "status", "id": 1})["s"]["seq"] - 1
    _wait(lambda: seq in _records(harness), "the timer checkpoint")
    assert _records(harness)[seq]["kind"] == "state"


def test_bad_frames_get_errors_and_the_connection_keeps_working(harness):
    c = harness.client()
    c.send_raw(raw_frame(b"\xc1"))                                   # not msgpack
    assert c.recv()["code"] == "malformed"
    c.send_raw(raw_frame(msgpack.packb([1, 2])))                     # not a map
    assert c.recv()["code"] == "malformed"
    c.send_raw(struct.pack(">I", 0))                                 # empty body
    assert c.recv()["code"] == "malformed"
    c.send_raw(struct.pack(">I", 200_000) + b"\x00" * 200_000)       # over max_frame_bytes
    assert c.recv()["code"] == "too_large"
    assert c.call({"t": "nope", "id": 4}) == {"t": "err", "id": 4, "code": "unknown_type", "msg": "unknown frame type"}
    assert c.call({"t": "rec", "r": {"api": "x", "lat": "slow"}, "sync": True, "id": 6})["code"] == "invalid"
    assert c.call({"t": "rec", "r": "not a map"})["code"] == "invalid"
    assert c.call({"t": "chk", "id": 7, "c": {"args": {}}})["code"] == "invalid"
    assert c.call({"t": "chk", "c": {"cmd": "x"}})["code"] == "invalid"
    assert c.call({"t": "ping", "id": 8}) == {"t": "pong", "id": 8}
    s = c.call({"t": "status", "id": 9})["s"]["counters"]
    assert s["frames.malformed"] == 3 and s["frames.too_large"] == 1 and s["frames.invalid"] == 4
    assert s["frames.unknown_type"] == 1


def test_a_length_over_the_stream_limit_closes_only_that_connection(harness):
    bad = harness.client()
    good = harness.client()
    bad.send_raw(struct.pack(">I", 17 * 1024 * 1024))
    assert bad.recv()["code"] == "too_large"
    with pytest.raises((ConnectionError, OSError)):
        bad.recv()
    assert good.call({"t": "ping", "id": 1}) == {"t": "pong", "id": 1}


def test_slow_reader_and_vanishing_clients_do_not_hurt_others(harness):
    # a client that sends a lot of sync records and never reads its replies
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(harness.config.socket_path))
    slow.setblocking(False)
    frame = raw_frame(msgpack.packb({"t": "rec", "r": {"api": "x" * 200}, "sync": True, "id": 1}))
    sent = 0
    try:
        while sent < 20_000:
            slow.send(frame * 50)
            sent += 50
    except BlockingIOError:
        pass  # the agent stopped reading it: backpressure, not unbounded buffering
    # clients that vanish mid-frame and with replies pending
    for _ in range(5):
        gone = FrameClient(harness.config.socket_path)
        gone.send({"t": "chk", "id": 1, "c": {"cmd": "ocpp.Reset"}})
        gone.send_raw(struct.pack(">I", 100) + b"\x82")
        gone.close()
    good = harness.client()
    assert good.call({"t": "rec", "r": {"api": "y"}, "sync": True, "id": 2})["t"] == "ok"
    assert good.call({"t": "ping", "id": 3}) == {"t": "pong", "id": 3}
    slow.close()
    _wait(lambda: good.call({"t": "status", "id": 4})["s"]["connections"] == 1, "closed connections to go")


def test_twin_updates_and_shim_drops(harness, judge):
    c = harness.client()
    c.send({"t": "upd", "s": {"vehicle.speed": 80.0}, "ts": 1234})
    c.send({"t": "drop", "n": 7, "reason": "ring_overflow"})
    s = c.call({"t": "status", "id": 1})["s"]
    assert judge.twin == {"vehicle.speed": 80.0}
    assert s["counters"]["drop.shim.ring_overflow"] == 7
    _wait(lambda: any(r.get("api") == "agent.shim_drop" for r in _records(harness).values()), "drop record")
    rec = next(r for r in _records(harness).values() if r.get("api") == "agent.shim_drop")
    assert rec["kind"] == "agent" and rec["x"] == {"n": 7, "reason": "ring_overflow"}


def test_restart_keeps_seq_and_boot_and_the_export_verifies(tmp_path):
    h = AgentHarness(tmp_path / "a")
    seqs, boots = [], []
    for _ in range(3):
        h.start()
        c = h.client()
        for i in range(300):
            c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "x": {"i": i}}})
        seqs.append(c.call({"t": "rec", "r": {"api": "end"}, "sync": True, "id": 1})["seq"])
        boots.append(c.call({"t": "status", "id": 2})["s"]["boot"])
        c.close()
        h.stop()
    assert boots == [1, 2, 3]
    recs = _records(h)
    assert sorted(recs) == list(range(len(recs)))          # no gap, no repeat
    assert [r["x"]["boot"] for r in recs.values() if r.get("api") == "agent.start"] == [1, 2, 3]
    assert [r["api"] for r in recs.values()].count("agent.stop") == 3
    trust = Trust.from_enrollment(json.loads(h.enrollment.read_text()))
    items, start = _items(h)
    assert verify_stream(trust, items, start).ok
    out = tmp_path / "out.vt"
    run_cli("agent", "export", "--config", str(h.config.source or _write_config(h, tmp_path)), "-o", str(out))
    res = run_cli("verify", str(out), "--trust", str(h.enrollment), "--json")
    assert json.loads(res.stdout)["records"] == len(recs)


@pytest.mark.parametrize("synchronous", ["off", "normal"])
def test_without_fsync_verdicts_still_wait_for_the_commit_and_the_chain_verifies(tmp_path, judge, synchronous):
    # "off" commits small checkpoints on the loop when the writer is idle and hands bursts
    # to the writer thread; both must keep the order of seals, commits and replies.
    h = AgentHarness(tmp_path / "a", engine=judge, spool__synchronous=synchronous,
                     ledger__checkpoint_interval_ms=100).start()
    try:
        c = h.client()
        for i in range(12):
            for j in range(600 if i % 4 == 0 else 1):
                c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "x": {"i": i, "j": j}}})
            v = c.call({"t": "chk", "id": i + 1, "c": {"cmd": "tcu.door_unlock", "args": {}, "src": {"id": "app"}}})
            assert v["t"] == "verdict" and v["id"] == i + 1 and v["v"] == "block"
            cmd = _records(h)[v["seq"]]  # committed before the verdict came back
            assert cmd["kind"] == "cmd" and cmd["v"] == "block"
        last = c.call({"t": "rec", "r": {"api": "end"}, "sync": True, "id": 99})["seq"]
    finally:
        h.stop()
    recs = _records(h)
    assert sorted(recs) == list(range(len(recs))) and last in recs
    assert sum(1 for r in recs.values() if r["api"] == "ocpp.MeterValues") == 3 * 600 + 9
    items, start = _items(h)
    assert verify_stream(Trust.from_enrollment(json.loads(h.enrollment.read_text())), items, start).ok


def _write_config(h: AgentHarness, tmp_path) -> str:
    return str(h.dir / "agent.toml")


def test_receipts_delete_only_matching_checkpoints_and_export_starts_after_them(tmp_path):
    from agent.errors import ReceiptMismatch
    from agent.spool import Spool
    h = AgentHarness(tmp_path / "a", ledger__checkpoint_records=256).start()
    c = h.client()
    for i in range(600):
        c.send({"t": "rec", "r": {"api": "x", "x": {"i": i}}})
    c.call({"t": "rec", "r": {"api": "end"}, "sync": True, "id": 1})
    h.stop()
    spool = Spool(h.config.spool_path)
    try:
        blocks = list(spool.iter_blocks())
        target = blocks[2]
        with pytest.raises(ReceiptMismatch):
            spool.apply_receipt(target.last, target.cp, b"\x00" * 32)
        assert len(list(spool.iter_blocks())) == len(blocks)
        n = spool.apply_receipt(target.last, target.cp, target.hash)
        assert n == sum(len(b.records) for b in blocks[:3])
        assert spool.apply_receipt(target.last, target.cp, target.hash) == 0   # idempotent
        assert spool.last_receipt() == (target.cp, target.last)
        assert [b.cp for b in spool.iter_blocks()] == [b.cp for b in blocks[3:]]
        start = spool.start()
        items = [(b.message, b.records) for b in spool.iter_blocks()]
    finally:
        spool.close()
    trust = Trust.from_enrollment(json.loads(h.enrollment.read_text()))
    assert verify_stream(trust, items, start).ok
    assert not verify_stream(trust, items, None).ok   # without the start point there is a gap


def test_status_before_the_first_run_says_so(tmp_path):
    d = tmp_path / "fresh"
    run_cli("agent", "init", "--device-id", "cp-9", "--dir", str(d))
    res = run_cli("agent", "status", "--config", str(d / "agent.toml"), check=False)
    assert res.returncode == 2
    assert "has not run yet" in res.stderr and "veritrail agent run --config" in res.stderr


def test_status_cli_works_with_and_without_the_daemon(tmp_path):
    h = AgentHarness(tmp_path / "a").start()
    try:
        c = h.client()
        c.call({"t": "rec", "r": {"api": "x"}, "sync": True, "id": 1})
        res = run_cli("agent", "status", "--config", str(h.dir / "agent.toml"), "--json")
        doc = json.loads(res.stdout)
        assert doc["daemon"] == "running" and doc["boot"] == 1 and doc["spool"]["records"] >= 2
        assert "unacked" in doc["spool"] and doc["uplink"] == {"state": "disabled"}
        from agent.core.keys import ed25519_backend
        assert doc["crypto"]["ed25519"] == ed25519_backend()[0] and doc["crypto"]["alg"] == "Ed25519"
        text = run_cli("agent", "status", "--config", str(h.dir / "agent.toml")).stdout
        assert f"signing    Ed25519 via {ed25519_backend()[0]}" in text
    finally:
        h.stop()
    text = run_cli("agent", "status", "--config", str(h.dir / "agent.toml")).stdout
    assert "not running" in text and "unacked" in text and "boot 1" in text


def test_init_refuses_to_overwrite_keys_without_force(tmp_path):
    d = tmp_path / "dev"
    run_cli("agent", "init", "--device-id", "cp-7", "--dir", str(d))
    keys = (d / "keys" / "signing.json").read_bytes()
    assert (d / "enroll.json").stat().st_mode & 0o777 == 0o600
    res = run_cli("agent", "init", "--device-id", "cp-7", "--dir", str(d), check=False)
    assert res.returncode == 1 and "--force" in res.stderr
    assert (d / "keys" / "signing.json").read_bytes() == keys
    run_cli("agent", "init", "--device-id", "cp-7", "--dir", str(d), "--force")
    assert (d / "keys" / "signing.json").read_bytes() != keys
    res = run_cli("agent", "init", "--device-id", "bad id!", "--dir", str(tmp_path / "x"), check=False)
    assert res.returncode == 2 and not (tmp_path / "x" / "keys").exists()


def test_k0_is_erased_from_the_key_store_after_first_start(tmp_path):
    from agent.keystore import FileKeyStore
    h = AgentHarness(tmp_path / "a")
    assert FileKeyStore(h.config.key_dir).fs_load() is not None
    h.start()
    h.stop()
    assert FileKeyStore(h.config.key_dir).fs_load() is None
