"""Power-cut test: a real daemon, a writer streaming records and commands, kill -9 at random
moments, restart, repeat. After each restart every acknowledged record is present, the spool
verifies (in-process every round, `veritrail verify` in a subprocess every 10th round and at
the end), seq continues without repeat and boot goes up by one per start.

50 rounds in CI; VERITRAIL_SOAK=1 runs 500.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

from agent.core.export import Trust, verify_stream, write_export
from agent.core.record import decode

from .conftest import AgentDir, run_cli

ROUNDS = int(os.environ.get("VERITRAIL_POWERCUT_ROUNDS") or (500 if os.environ.get("VERITRAIL_SOAK") == "1" else 50))


def _stream(agent: AgentDir, client, round_no: int, acked: dict[int, str], stop: threading.Event) -> None:
    """Send 10 records + 1 sync record + 1 command per step; note every acknowledged seq."""
    step = 0
    try:
        while not stop.is_set():
            for j in range(10):
                client.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "st": 200, "x": {"tag": f"{round_no}.{step}.{j}"}}})
            tag = f"{round_no}.{step}.sync"
            client.send({"t": "rec", "r": {"api": "rest.POST /v1/x", "x": {"tag": tag}}, "sync": True, "id": 2 * step})
            client.send({"t": "chk", "id": 2 * step + 1,
                         "c": {"cmd": "ocpp.UnlockConnector", "args": {"tag": f"{round_no}.{step}.cmd"}, "src": {"id": "csms"}}})
            ok = client.recv()
            verdict = client.recv()
            assert ok["t"] == "ok" and ok["id"] == 2 * step, ok
            assert verdict["t"] == "verdict" and verdict["id"] == 2 * step + 1, verdict
            # everything this connection sent before an acknowledged record is durable too
            for j in range(10):
                acked[ok["seq"] - 10 + j] = f"{round_no}.{step}.{j}"
            acked[ok["seq"]] = tag
            acked[verdict["seq"]] = f"{round_no}.{step}.cmd"
            step += 1
    except (OSError, ConnectionError):
        return  # the daemon was killed under us


def _tag(rec: dict) -> str | None:
    x = rec.get("x") or {}
    if rec.get("kind") == "cmd":
        return (x.get("args") or {}).get("tag")
    return x.get("tag")


def _check_spool(agent: AgentDir, trust: Trust, acked: dict[int, str], round_no: int) -> list[int]:
    """Verify the whole spool (read-only, beside the running daemon); returns the boots seen."""
    spool = agent.spool()
    try:
        items, records = [], {}
        for block in spool.iter_blocks():
            assert not block.damaged, f"checkpoint {block.cp} damaged after kill -9"
            items.append((block.message, block.records))
            for data in block.records:
                rec = decode(data)
                assert rec["seq"] not in records, "seq repeated"
                records[rec["seq"]] = rec
    finally:
        spool.close()
    report = verify_stream(trust, items)
    assert report.ok, report.as_dict()
    missing = [seq for seq, tag in acked.items() if seq not in records or _tag(records[seq]) != tag]
    assert not missing, f"round {round_no}: acknowledged records lost or changed: {missing[:10]}"
    return [r["x"]["boot"] for _, r in sorted(records.items()) if r.get("api") == "agent.start"]


def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path):
    agent = AgentDir(tmp_path / "agent")
    trust = Trust.from_enrollment(json.loads(agent.paths.enrollment.read_text()))
    rng = random.Random(int(os.environ.get("VERITRAIL_SEED", "4242")))
    acked: dict[int, str] = {}
    boots: list[int] = []
    for round_no in range(ROUNDS + 1):
        proc = agent.start()
        try:
            if round_no % 5 == 4:  # now and then: kill during start-up
                time.sleep(rng.uniform(0.0, 0.4))
                proc.kill()
                proc.wait()
                continue
            client = agent.wait_ready(proc)
            # the restarted daemon holds everything the killed one acknowledged
            boots = _check_spool(agent, trust, acked, round_no)
            assert boots == sorted(boots) and len(set(boots)) == len(boots), boots
            if round_no % 10 == 9 or round_no == ROUNDS:
                out = tmp_path / "export.vt"
                run_cli("agent", "export", "--config", str(agent.paths.config), "-o", str(out))
                res = run_cli("verify", str(out), "--trust", str(agent.paths.enrollment), "--json")
                assert json.loads(res.stdout)["ok"] is True
            if round_no == ROUNDS:
                client.close()
                agent.stop(proc)  # and an orderly stop at the end
                break
            stop = threading.Event()
            writer = threading.Thread(target=_stream, args=(agent, client, round_no, acked, stop))
            writer.start()
            time.sleep(rng.uniform(0.0, 0.25))
            proc.kill()
            proc.wait()
            stop.set()
            writer.join(10)
            assert not writer.is_alive()
            client.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    assert len(boots) >= ROUNDS * 4 // 5, "too few starts got as far as their start record"
    assert len(acked) > ROUNDS * 10, "the writer hardly wrote anything: the test proved little"
