"""The journal: a verdict goes back once its record is committed (journaled), the range is
signed when input pauses (``security_seal_quiet_ms``, at the latest ``security_seal_ms``), and a crash in between is repaired at the next start by
sealing the journaled records under the boot that wrote them."""

from __future__ import annotations

import json
import os
import time

import pytest

from agent.core.chain import ChainState, Sealer
from agent.core.checkpoint import parse
from agent.core.errors import RecordInvalid
from agent.core.export import Trust, verify_stream
from agent.core.keys import generate_signer
from agent.core.record import decode
from agent.daemon import recover_journal
from agent.spool import Spool

from .conftest import AgentDir, run_cli


def _blocks(agent: AgentDir) -> tuple[list, dict[int, dict], list[tuple[int, str, bytes]]]:
    spool = agent.spool()
    try:
        items, records = [], {}
        for b in spool.iter_blocks():
            items.append((b.message, b.records))
            for d in b.records:
                records[decode(d)["seq"]] = decode(d)
        return items, records, spool.journal()
    finally:
        spool.close()


def test_verdict_is_durable_in_the_journal_and_sealed_after_a_kill_9(tmp_path):
    # 60 s: the daemon never seals the commands before it is killed
    agent = AgentDir(tmp_path / "agent", ledger__security_seal_ms=60_000, ledger__security_seal_quiet_ms=60_000)
    trust = Trust.from_enrollment(json.loads(agent.paths.enrollment.read_text()))
    proc = agent.start()
    try:
        client = agent.wait_ready(proc)
        v1 = client.call({"t": "chk", "id": 1, "c": {"cmd": "ocpp.UnlockConnector", "args": {"connector_id": 1},
                                                      "src": {"id": "csms"}}})
        v2 = client.call({"t": "chk", "id": 2, "c": {"cmd": "ocpp.RemoteStartTransaction", "args": {},
                                                      "src": {"id": "csms"}}})
        assert v1["t"] == v2["t"] == "verdict" and v2["seq"] == v1["seq"] + 1
        _, sealed, journal = _blocks(agent)
        assert v1["seq"] not in sealed and v2["seq"] not in sealed  # answered before sealing...
        assert [row[0] for row in journal] == [v1["seq"], v2["seq"]]  # ...because they are journaled
        assert decode(journal[0][2])["api"] == "ocpp.UnlockConnector" and journal[0][1] == "cmd"
        status = client.call({"t": "status", "id": 3})["s"]["spool"]
        assert status["journal_records"] == 2
        client.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()

    proc = agent.start()  # the next start seals them before anything else
    try:
        client = agent.wait_ready(proc)
        items, records, journal = _blocks(agent)
        assert journal == []
        assert records[v1["seq"]]["api"] == "ocpp.UnlockConnector" and records[v2["seq"]]["kind"] == "cmd"
        boot_then = records[v1["seq"]]["boot"]
        recovered = [parse(m) for m, recs in items if any(decode(d)["seq"] == v2["seq"] for d in recs)]
        assert len(recovered) == 1 and recovered[0].why == "recovered" and recovered[0].boot == boot_then
        assert recovered[0].first == v1["seq"] and recovered[0].last == v2["seq"]
        start = [r for r in records.values() if r["api"] == "agent.start"][-1]
        assert start["boot"] == boot_then + 1 and "journal_recovered:2" in start["x"]["problems"]
        report = verify_stream(trust, items)
        assert report.ok, report.as_dict()
        status = json.loads(run_cli("agent", "status", "--config", str(agent.paths.config), "--json").stdout)
        assert status["counters"].get("state.journal_recovered") == 1
        client.close()
    finally:
        agent.stop(proc)


def test_without_a_crash_the_range_is_sealed_and_its_journal_rows_deleted(tmp_path):
    agent = AgentDir(tmp_path / "agent", ledger__security_seal_ms=0)
    proc = agent.start()
    try:
        client = agent.wait_ready(proc)
        v = client.call({"t": "chk", "id": 1, "c": {"cmd": "ocpp.UnlockConnector", "args": {}, "src": {}}})
        ok = client.call({"t": "rec", "r": {"api": "rest.GET /"}, "sync": True, "id": 2})  # a later commit
        assert ok["t"] == "ok"
        _, records, journal = _blocks(agent)
        assert v["seq"] in records  # the api record after it sealed the command's range at once
        end = time.monotonic() + 5
        while journal:  # the sync record: sealed when input pauses, its journal row deleted
            assert time.monotonic() < end, journal
            time.sleep(0.005)
            _, records, journal = _blocks(agent)
        assert ok["seq"] in records
        client.close()
    finally:
        agent.stop(proc)


def _state_and_signer() -> tuple[ChainState, object]:
    return ChainState("dev-j", 3, 10, 2, bytes(32), os.urandom(32)), generate_signer()


def _journal_rows(state: ChainState, signer, n: int) -> list[tuple[int, str, bytes]]:
    sealer = Sealer(state, signer)
    for i in range(n):
        sealer.append({"kind": "cmd", "api": f"c{i}"}, 100 + i, 1_700_000_000_000 + i)
    return sealer.open_rows(state.next_seq - 1)


def test_recovery_seals_the_contiguous_run_and_reports_what_does_not_continue_the_chain(tmp_path):
    state, signer = _state_and_signer()
    rows = _journal_rows(state, signer, 3)
    stray = (rows[-1][0] + 5, "cmd", rows[-1][2])  # a gap: cannot be sealed after the run
    spool = Spool(tmp_path / "s.db", synchronous="off")
    try:
        spool.commit([], journal=rows + [stray])
        problems: list[str] = []
        after = recover_journal(spool, state, signer, problems)
        assert after.next_seq == state.next_seq + 3 and after.next_cp == state.next_cp + 1
        assert after.boot == state.boot
        assert problems == ["journal_unusable:1", "journal_recovered:3"]
        assert spool.journal() == []
        block = list(spool.iter_blocks())[-1]
        assert block.records == [r[2] for r in rows] and parse(block.message).why == "recovered"
    finally:
        spool.close()


def test_recovery_refuses_records_of_another_boot(tmp_path):
    state, signer = _state_and_signer()
    rows = _journal_rows(state, signer, 2)
    with pytest.raises(RecordInvalid):
        Sealer(ChainState("dev-j", 4, 10, 2, bytes(32), os.urandom(32)), signer).restore(rows)
    spool = Spool(tmp_path / "s.db", synchronous="off")
    try:
        spool.commit([], journal=rows)
        problems: list[str] = []
        other_boot = ChainState("dev-j", 4, 10, 2, bytes(32), state.fs_key)
        assert recover_journal(spool, other_boot, signer, problems) == other_boot
        assert problems == ["journal_unusable:2"] and spool.journal() == []
    finally:
        spool.close()


def test_a_checkpoint_commit_deletes_the_journal_rows_it_covers(tmp_path):
    state, signer = _state_and_signer()
    sealer = Sealer(state, signer)
    for i in range(4):
        sealer.append({"kind": "cmd", "api": f"c{i}"}, 100, 1_700_000_000_000)
    rows = sealer.open_rows(state.next_seq - 1)
    spool = Spool(tmp_path / "s.db", synchronous="off")
    try:
        spool.commit([], journal=rows[:3])
        assert [r[0] for r in spool.journal()] == [10, 11, 12]
        sealed = sealer.seal(mono=100, wall=1_700_000_000_000, reason="security")  # covers 10..13
        spool.commit([sealed], journal=rows[3:])  # a journal row the checkpoint covers is not written
        assert spool.journal() == []
    finally:
        spool.close()


def test_journaled_records_are_sealed_when_input_pauses_and_at_the_latest_after_security_seal_ms(tmp_path):
    agent = AgentDir(tmp_path / "agent", ledger__security_seal_ms=400, ledger__security_seal_quiet_ms=50)
    proc = agent.start()
    try:
        client = agent.wait_ready(proc)
        v = client.call({"t": "chk", "id": 1, "c": {"cmd": "ocpp.UnlockConnector", "args": {}, "src": {}}})
        t0 = time.monotonic()
        while v["seq"] not in _blocks(agent)[1]:  # nothing else comes: sealed ~50 ms later
            assert time.monotonic() - t0 < 5
            time.sleep(0.005)
        assert time.monotonic() - t0 < 0.35
        # a steady stream of records (every 10 ms < the 50 ms pause) holds the seal off until 400 ms
        v = client.call({"t": "chk", "id": 2, "c": {"cmd": "ocpp.UnlockConnector", "args": {}, "src": {}}})
        t0, sealed_after = time.monotonic(), None
        while time.monotonic() - t0 < 1.0:
            client.send({"t": "ping", "id": 0})
            assert client.recv()["t"] == "pong"
            if sealed_after is None and v["seq"] in _blocks(agent)[1]:
                sealed_after = time.monotonic() - t0
            time.sleep(0.01)
        assert sealed_after is not None and 0.3 < sealed_after < 0.9, sealed_after
        client.close()
    finally:
        agent.stop(proc)


def test_kill_9_during_a_storm_of_commands_loses_no_verdict_and_recovery_seals_the_journal(tmp_path):
    """Under a closed-loop storm input never pauses, so the journal holds up to
    security_seal_ms of answered commands when the daemon is killed: every one of them must
    be in the chain after the next start, and the chain must verify."""
    import random
    import threading

    agent = AgentDir(tmp_path / "agent")
    trust = Trust.from_enrollment(json.loads(agent.paths.enrollment.read_text()))
    rng = random.Random(11)
    acked: dict[int, str] = {}
    for rnd in range(8):
        proc = agent.start()
        try:
            client = agent.wait_ready(proc)
            stop = threading.Event()

            def storm(rnd: int = rnd, client=client, stop=stop) -> None:
                i = 0
                try:
                    while not stop.is_set():
                        v = client.call({"t": "chk", "id": i, "c": {"cmd": "ocpp.UnlockConnector",
                                                                     "args": {"tag": f"{rnd}.{i}"}, "src": {}}})
                        acked[v["seq"]] = f"{rnd}.{i}"
                        i += 1
                except (OSError, ConnectionError):
                    return  # killed under us

            writer = threading.Thread(target=storm)
            writer.start()
            time.sleep(rng.uniform(0.08, 0.25))
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        stop.set()
        writer.join(10)
        client.close()
    proc = agent.start()
    try:
        agent.wait_ready(proc).close()
    finally:
        agent.stop(proc)
    items, records, journal = _blocks(agent)
    assert journal == [] and verify_stream(trust, items).ok
    lost = [s for s, tag in acked.items() if s not in records or records[s]["x"]["args"]["tag"] != tag]
    assert len(acked) > 500 and not lost, lost[:10]
    recovered = [p for r in records.values() if r["api"] == "agent.start" for p in r["x"]["problems"]
                 if p.startswith("journal_recovered:")]
    assert recovered, "no kill landed while commands were journaled: the test proved nothing"
