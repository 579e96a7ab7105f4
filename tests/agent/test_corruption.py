"""Corruption: bytes overwritten inside the SQLite file, or a damaged state row. The agent
starts, reports what is damaged, and keeps accepting records."""

from __future__ import annotations

import json
import os
import random
import sqlite3

from agent.core.export import Trust, verify_stream
from agent.spool import Spool
from agent.testing import AgentHarness


def _fill(h: AgentHarness, n: int = 3000) -> int:
    h.start()
    c = h.client()
    for i in range(n):
        # random padding: the spool compresses records, so repeated bytes would leave a file of
        # a few pages and the damage below would hit SQLite's own pages, not record blobs
        c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "x": {"i": i, "pad": os.urandom(20).hex()}}})
    seq = c.call({"t": "rec", "r": {"api": "end"}, "sync": True, "id": 1})["seq"]
    c.close()
    h.stop()
    return seq


def _status(h: AgentHarness) -> dict:
    c = h.client()
    try:
        return c.call({"t": "status", "id": 1})["s"]
    finally:
        c.close()


def test_overwritten_bytes_are_skipped_counted_reported_and_the_agent_goes_on(tmp_path):
    h = AgentHarness(tmp_path / "a")
    last = _fill(h)
    path = h.config.spool_path
    size = path.stat().st_size
    rng = random.Random(7)
    with open(path, "r+b") as fh:  # damage the middle of the file (record blobs live there)
        for _ in range(3):
            fh.seek(rng.randrange(size // 4, size * 3 // 4))
            fh.write(os.urandom(512))
    h.start()
    try:
        c = h.client()
        ok = c.call({"t": "rec", "r": {"api": "after"}, "sync": True, "id": 2})
        assert ok["t"] == "ok" and ok["seq"] > last + 1          # seq went on, no repeat
        deadline_ok = False
        for _ in range(500):  # the background scrub reads every block once
            s = _status(h)
            # damaged blocks found by the scrub, the structure check at start, or a spool that
            # can no longer be summed: each one is a report
            if s["spool"]["damaged_blocks"] or s["spool"].get("error") or s["counters"].get("spool.quick_check_failed"):
                deadline_ok = True
                break
        assert deadline_ok, "damage not reported in status"
        assert c.call({"t": "chk", "id": 3, "c": {"cmd": "ocpp.Reset"}})["t"] == "verdict"
    finally:
        h.stop()
    spool = Spool(path, readonly=True)
    try:
        blocks = list(spool.iter_blocks())
    finally:
        spool.close()
    damaged = [b.cp for b in blocks if b.damaged]
    good = [b for b in blocks if not b.damaged]
    assert damaged, "the overwrite hit no block: the test proved nothing"
    assert good[-1].last >= ok["seq"]


def test_a_damaged_state_copy_is_replaced_by_the_other_and_the_chain_still_verifies(tmp_path):
    h = AgentHarness(tmp_path / "a")
    _fill(h, 500)
    with sqlite3.connect(h.config.spool_path) as db:
        db.execute("UPDATE state_a SET body = x'00112233'")
    _fill(h, 500)
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        items = [(b.message, b.records) for b in spool.iter_blocks()]
        state, problems = spool.load_state()
    finally:
        spool.close()
    assert problems == [] and state is not None                  # both copies rewritten since
    trust = Trust.from_enrollment(json.loads(h.enrollment.read_text()))
    assert verify_stream(trust, items).ok


def test_both_state_copies_lost_rebuilds_seq_from_the_spool_tail(tmp_path):
    h = AgentHarness(tmp_path / "a")
    last = _fill(h, 500)
    with sqlite3.connect(h.config.spool_path) as db:
        db.execute("DELETE FROM state_a")
        db.execute("UPDATE state_b SET body = x'00'")
    h.start()
    try:
        s = _status(h)
        assert s["counters"]["state.state_rebuilt_from_tail"] == 1
        assert s["counters"]["state.fs_key_lost"] == 1            # K_next cannot be recovered: reported
        c = h.client()
        ok = c.call({"t": "rec", "r": {"api": "after"}, "sync": True, "id": 2})
        assert ok["seq"] > last + 1 and s["boot"] == 2   # above every boot in the spool
    finally:
        h.stop()
