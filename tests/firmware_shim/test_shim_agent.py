"""The shim against a protocol-speaking agent (FakeAgent): agent up, gone, slow, hung,
stalled and restarting. The caller is never blocked past its bound, records arrive in
order, overflow is counted and reported with a `drop` frame."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import firmware_shim
from firmware_shim import Shim, ShimConfig, Verdict
from firmware_shim.redact import hash_value
from firmware_shim.testing import FakeAgent

# Generous bounds: the budget is 2 ms, the slack absorbs a loaded 2-core CI machine. A
# blocking connect or send (seconds) or waiting for a verdict past the deadline fails.
RECORD_BOUND_S = 0.1
CHECK_SLACK_S = 0.25
FAST = {"backoff_min_ms": 5, "backoff_max_ms": 20}


def door_judge(c: dict) -> tuple[str, list[str]]:
    if c["cmd"] == "tcu.door_unlock" and c["args"].get("speed", 0) > 0:
        return "block", ["door-while-moving"]
    return "allow", []


@pytest.fixture
def agent(agent_address: str) -> Iterator[FakeAgent]:
    fake = FakeAgent(agent_address, judge=door_judge).start()
    yield fake
    fake.stop()


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def indices(fake: FakeAgent, api: str = "t.rec") -> list[int]:
    return [r["x"]["i"] for r in fake.records() if r["api"] == api]


def test_records_checks_and_updates_reach_the_agent(agent: FakeAgent) -> None:
    shim = Shim(agent=agent.address)
    for i in range(20):
        shim.record("t.rec", src="app", sub="VIN1", st=200, lat=5, rq=10, rs=20, i=i)
    blocked = shim.check("tcu.door_unlock", {"speed": 30}, src={"id": "backend", "net": "10.0.0.9"})
    allowed = shim.check("tcu.door_unlock", {"speed": 0}, src="backend", sub="VIN1")
    shim.update({"vehicle.speed": 30.0}, gear="D")
    assert shim.flush(2000)
    assert agent.wait_for(lambda: len(agent.of_type("upd")) == 1)
    assert indices(agent) == list(range(20))
    first = agent.records()[0]
    assert first == {"api": "t.rec", "src": {"id": "app"}, "sub": "VIN1", "st": 200, "lat": 5, "rq": 10, "rs": 20, "x": {"i": 0}}
    assert (blocked.action, blocked.source, blocked.rules, blocked.allowed) == ("block", "agent", ["door-while-moving"], False)
    assert (allowed.action, bool(allowed)) == ("allow", True)
    chks = agent.of_type("chk")
    assert chks[0]["c"] == {"cmd": "tcu.door_unlock", "args": {"speed": 30}, "src": {"id": "backend", "net": "10.0.0.9"}}
    assert chks[1]["c"]["sub"] == "VIN1" and chks[0]["dl"] == 500
    assert agent.of_type("upd")[0]["s"] == {"vehicle.speed": 30.0, "gear": "D"}
    assert agent.of_type("hello")[0] == {"t": "hello", "v": 1, "sw": "veritrail-shim/0.1"}
    shim.close()


def test_agent_gone_caller_bounded_then_ring_delivered_in_order(agent_address: str) -> None:
    shim = Shim(agent=agent_address, fail_policy={"tcu.door_*": "closed"}, **FAST)
    worst = 0.0
    for i in range(100):
        _, took = timed(shim.record, "t.rec", i=i)
        worst = max(worst, took)
    assert worst < RECORD_BOUND_S
    verdict, took = timed(shim.check, "tcu.door_unlock", {"speed": 0}, "app")
    assert (verdict.action, verdict.source, verdict.reason) == ("block", "fallback", "no_agent")
    assert took < 0.5 + CHECK_SLACK_S
    assert shim.check("tcu.horn", {}, "app").action == "allow"  # fail-open class
    assert shim.stats()["queued_frames"] == 102

    with FakeAgent(agent_address) as fake:
        assert shim.flush(3000)
        assert fake.wait_for(lambda: len(fake.records()) == 102)
        assert indices(fake) == list(range(100))
        fallbacks = [r for r in fake.records() if r["api"] == "shim.check_fallback"]
        assert [(r["sub"], r["st"], r["x"]) for r in fallbacks] == [
            ("tcu.door_unlock", "block", {"reason": "no_agent", "policy": "closed"}),
            ("tcu.horn", "allow", {"reason": "no_agent", "policy": "open"}),
        ]
        assert fake.of_type("chk") == []  # a check that fell back is never sent late
    shim.close()


def test_agent_slow_check_returns_by_deadline_with_fail_policy(agent_address: str) -> None:
    with FakeAgent(agent_address, reply_delay_ms=400) as fake:
        shim = Shim(agent=agent_address, check_deadline_ms=100, fail_policy={"tcu.door_*": "closed"})
        verdict, took = timed(shim.check, "tcu.door_unlock", {"speed": 0}, "app")
        assert (verdict.action, verdict.reason) == ("block", "timeout")
        assert 0.09 < took < 0.1 + CHECK_SLACK_S
        _, took = timed(shim.record, "t.rec", i=0)
        assert took < RECORD_BOUND_S
        # the late verdict is read and ignored, not mistaken for the next check's answer
        fake.reply_delay_ms = 0
        assert fake.wait_for(lambda: (shim.poll(10), shim.stats().get("unmatched_replies", 0))[1] >= 1)
        assert shim.check("tcu.door_unlock", {"speed": 0}, "app", deadline_ms=2000).source == "agent"
        shim.close()


def test_agent_hung_on_accept_tcp_caller_bounded() -> None:
    """A TCP agent whose accept queue is full: connect hangs in the kernel."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        shim = Shim(agent=f"tcp:127.0.0.1:{port}", connect_timeout_ms=1000, check_deadline_ms=150)
        worst = max(timed(shim.record, "t.rec", i=i)[1] for i in range(20))
        assert worst < RECORD_BOUND_S
        verdict, took = timed(shim.check, "tcu.horn", {}, "app")
        assert verdict.source == "fallback"
        assert took < 0.15 + CHECK_SLACK_S
    finally:
        for s in fillers:
            s.close()
        listener.close()


@pytest.mark.parametrize("background", [False, True], ids=["caller-driven", "pump-thread"])
def test_agent_restarting_records_after_reconnect_arrive_in_order(agent_address: str, background: bool) -> None:
    fake = FakeAgent(agent_address).start()
    shim = Shim(agent=agent_address, **FAST)
    if background:
        shim.start()
    try:
        for i in range(50):
            shim.record("t.rec", i=i)
        assert shim.flush(2000)
        assert fake.wait_for(lambda: len(fake.records()) == 50)
        fake.stop()
        worst = 0.0
        for i in range(50, 100):  # agent down
            worst = max(worst, timed(shim.record, "t.rec", i=i)[1])
        fake.start()
        for i in range(100, 150):  # agent back (maybe not yet reconnected)
            worst = max(worst, timed(shim.record, "t.rec", i=i)[1])
        assert worst < RECORD_BOUND_S
        assert shim.flush(3000)
        assert fake.wait_for(lambda: len(fake.records()) >= 150)
        assert indices(fake) == list(range(150))
        assert shim.stats()["connects"] == 2
    finally:
        shim.close()
        fake.stop()


def test_agent_stalled_ring_overflow_counted_and_reported(agent: FakeAgent) -> None:
    shim = Shim(agent=agent.address, ring_frames=64)
    shim.record("t.rec", i=0)
    assert shim.flush(1000) and agent.wait_for(lambda: len(agent.records()) == 1)
    agent.pause_reading()
    total = 4000
    worst = 0.0
    for i in range(1, total):
        worst = max(worst, timed(shim.record, "t.rec", i=i, pad="p" * 200)[1])
    assert worst < RECORD_BOUND_S
    dropped = shim.stats()["dropped"]["ring_overflow"]
    assert dropped > 0
    agent.resume_reading()
    assert shim.flush(5000)
    shim.record("t.rec", i=total)  # after the gap
    assert shim.flush(5000)
    assert agent.wait_for(lambda: agent.records() and agent.records()[-1]["x"]["i"] == total)
    got = indices(agent)
    assert got == sorted(got) and len(set(got)) == len(got)  # in order, no duplicates
    drops = agent.of_type("drop")
    assert sum(d["n"] for d in drops) == dropped and {d["reason"] for d in drops} == {"ring_overflow"}
    assert len(got) + dropped == total + 1
    # the drop frame sits exactly at the gap: before it contiguous, after it the rest
    kinds = [(f["t"], f.get("r", {}).get("x", {}).get("i")) for f in agent.frames if f["t"] in ("rec", "drop")]
    at = kinds.index(("drop", None))
    assert kinds[at - 1][1] + 1 + dropped == kinds[at + 1][1]
    shim.close()


def test_updates_coalesce_while_agent_away(agent_address: str) -> None:
    shim = Shim(agent=agent_address, **FAST)
    for speed in range(100):
        shim.update({"vehicle.speed": float(speed)})
    shim.update(door="closed")
    with FakeAgent(agent_address) as fake:
        assert shim.flush(2000)
        assert fake.wait_for(lambda: len(fake.of_type("upd")) == 1)
        assert fake.of_type("upd")[0]["s"] == {"vehicle.speed": 99.0, "door": "closed"}
    shim.close()


def test_redacted_fields_never_leave_the_process(agent: FakeAgent) -> None:
    key = b"k" * 32
    shim = Shim(agent=agent.address, redact_fields=("idTag", "password", "sub"), redact_key=key)
    shim.record("ocpp.Authorize", sub="VIN-SECRET", idTag="04A1B2C3", nested={"password": "hunter2", "keep": 1})
    shim.check("ocpp.RemoteStartTransaction", {"idTag": "04A1B2C3", "connectorId": 1}, "csms")
    assert shim.flush(1000) and agent.wait_for(lambda: agent.of_type("chk") and agent.records())
    rec = agent.records()[0]
    assert rec["x"] == {"idTag": hash_value(key, "04A1B2C3"), "nested": {"password": hash_value(key, "hunter2"), "keep": 1}}
    assert rec["sub"] == hash_value(key, "VIN-SECRET")
    assert agent.of_type("chk")[0]["c"]["args"] == {"idTag": hash_value(key, "04A1B2C3"), "connectorId": 1}
    assert "04A1B2C3" not in repr(agent.frames) and "hunter2" not in repr(agent.frames)
    shim.close()


def test_threads_record_and_check_concurrently(agent: FakeAgent) -> None:
    shim = Shim(agent=agent.address, check_deadline_ms=3000)
    shim.start()
    verdicts: list[Verdict] = []

    def worker(n: int) -> None:
        for i in range(200):
            shim.record("t.rec", i=n * 1000 + i)
            if i % 50 == 0:
                verdicts.append(shim.check("tcu.door_unlock", {"speed": n}, "app"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shim.flush(3000)
    assert agent.wait_for(lambda: len(indices(agent)) == 800)
    for n in range(4):  # each caller's records stay in its own order
        mine = [i for i in indices(agent) if i // 1000 == n]
        assert mine == [n * 1000 + i for i in range(200)]
    assert len(verdicts) == 16 and all(v.source == "agent" for v in verdicts)
    assert sorted(v.action for v in verdicts) == ["allow"] * 4 + ["block"] * 12
    shim.close()


def test_record_never_raises_on_bad_input(agent: FakeAgent) -> None:
    shim = Shim(agent=agent.address)
    shim.record(None)  # type: ignore[arg-type]
    shim.record("t.rec", obj=object())
    shim.record("t.rec", big=2**70)
    shim.record("t.rec", pad="x" * 70000)
    shim.update({"k": object()})
    assert shim.stats()["dropped"] == {"invalid": 1, "unencodable": 4}
    assert shim.flush(1000)
    assert agent.wait_for(lambda: agent.of_type("drop"))
    assert {d["reason"]: d["n"] for d in agent.of_type("drop")} == {"invalid": 1, "unencodable": 4}
    shim.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ring_frames": 0}, "ring_frames"),
        ({"check_deadline_ms": -5}, "check_deadline_ms"),
        ({"fail_policy": {"tcu.*": "sometimes"}}, "fail_policy"),
        ({"fail_default": "maybe"}, "fail_default"),
        ({"redact_fields": ("idTag",)}, "redact_key"),
        ({"redact_fields": ("idTag",), "redact_key": b"short"}, "redact_key"),
        ({"backoff_min_ms": 100, "backoff_max_ms": 10}, "backoff_max_ms"),
        ({"agent": "http://x"}, "unix: or tcp:"),
        ({"agent": "tcp:host"}, "tcp:HOST:PORT"),
    ],
)
def test_bad_settings_are_refused_by_name(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shim(**settings)


def test_fail_policy_most_specific_pattern_wins() -> None:
    cfg = ShimConfig(fail_policy={"tcu.*": "closed", "tcu.horn": "open", "tcu.door_*": "closed", "tcu.door_status": "open"})
    policy = cfg.fail_policy
    assert [policy.action_for(c) for c in ("tcu.door_unlock", "tcu.door_status", "tcu.horn", "tcu.x", "ocpp.Reset")] == [
        "block", "allow", "allow", "block", "allow"
    ]


def test_module_level_api_uses_the_default_shim(agent: FakeAgent) -> None:
    shim = firmware_shim.configure(agent=agent.address)
    try:
        firmware_shim.record("t.rec", i=1)
        firmware_shim.update({"tx.active": True})
        assert firmware_shim.check("tcu.door_unlock", {"speed": 5}, "app").action == "block"
        assert agent.wait_for(lambda: agent.records() and agent.of_type("upd"))
        assert firmware_shim.default_shim() is shim
    finally:
        shim.close()
