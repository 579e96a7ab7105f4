"""Bounded disk: api-only checkpoints are evicted with a signed bridge record, security-class
records survive, and when they alone fill the spool api records are counted and summarised."""

from __future__ import annotations

import json
import os
import time

from agent.core.export import Trust, verify_stream
from agent.core.record import decode
from agent.core.verify import EVICTED
from agent.spool import Spool
from agent.testing import AgentHarness


def _dump(h: AgentHarness):
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        blocks = list(spool.iter_blocks())
        return blocks, spool.start(), spool.bytes_used
    finally:
        spool.close()


def test_tiny_spool_evicts_api_blocks_keeps_commands_and_still_verifies(tmp_path):
    h = AgentHarness(tmp_path / "a", spool__max_bytes=64 * 1024).start()
    c = h.client()
    cmd_seqs = []
    for round_ in range(40):
        for i in range(100):
            # random padding: the spool compresses records, and repeated bytes would never fill it
            c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "x": {"pad": os.urandom(30).hex(), "i": i}}})
        v = c.call({"t": "chk", "id": round_, "c": {"cmd": "ocpp.Reset", "args": {"n": round_}}})
        cmd_seqs.append(v["seq"])
    status = c.call({"t": "status", "id": 99})["s"]
    h.stop()
    blocks, start, used = _dump(h)
    assert status["counters"]["evicted.blocks"] > 0 and status["counters"]["evicted.records"] > 0
    assert used <= 64 * 1024 + 16 * 1024  # back under the bound (plus what arrived since)
    records = {decode(d)["seq"]: decode(d) for b in blocks for d in b.records}
    assert all(s in records and records[s]["kind"] == "cmd" for s in cmd_seqs), "a command record was evicted"
    evictions = [r for r in records.values() if r.get("api") == EVICTED]
    assert evictions and all(r["kind"] == "agent" for r in evictions)
    trust = Trust.from_enrollment(json.loads(h.enrollment.read_text()))
    report = verify_stream(trust, [(b.message, b.records) for b in blocks], start)
    assert report.ok, report.as_dict()
    assert len(report.bridges) == len(evictions)
    # the bridges cover exactly the seqs that are gone
    gone = {s for br in report.bridges for s in range(br["from_seq"], br["to_seq"] + 1)}
    assert gone.isdisjoint(records) and len(gone) + len(records) == report.last_seq + 1


def test_when_security_records_fill_the_spool_api_records_are_counted_and_summarised(tmp_path):
    h = AgentHarness(tmp_path / "a", spool__max_bytes=8 * 1024, ledger__drop_summary_interval_ms=100).start()
    c = h.client()
    for i in range(80):  # commands only: nothing can be evicted
        c.call({"t": "chk", "id": i, "c": {"cmd": "ocpp.ChangeConfiguration", "args": {"k": os.urandom(100).hex()}}})
    # the commands are answered once journaled and sealed security_seal_ms later: the spool
    # is full once their checkpoints are stored
    end = time.monotonic() + 10
    while not c.call({"t": "status", "id": 999})["s"]["spool_full"]:
        assert time.monotonic() < end, "the spool never reported full"
        time.sleep(0.01)
    refused = c.call({"t": "rec", "r": {"api": "x"}, "sync": True, "id": 1000})
    assert refused["t"] == "err" and refused["code"] == "busy"
    for _ in range(25):
        c.send({"t": "rec", "r": {"api": "ocpp.MeterValues"}})
    # still accepting commands
    assert c.call({"t": "chk", "id": 2000, "c": {"cmd": "ocpp.Reset"}})["t"] == "verdict"
    end = time.monotonic() + 10
    while True:
        blocks, _, _ = _dump(h)
        summaries = [decode(d) for b in blocks for d in b.records if decode(d).get("api") == "agent.dropped"]
        if summaries or time.monotonic() > end:
            break
        time.sleep(0.05)
    status = c.call({"t": "status", "id": 3})["s"]
    h.stop()
    assert status["spool_full"] is True and status["counters"]["drop.spool_full"] == 26
    assert summaries and sum(s["x"]["n"]["spool_full"] for s in summaries) == 26
    assert status["counters"].get("evicted.blocks", 0) == 0
