"""Checkpoints are cut at ``checkpoint_records`` or ``checkpoint_bytes``, whichever comes
first, so every checkpoint fits the uplink's batch limit alone (a larger one was skipped)."""

from __future__ import annotations

import asyncio
import os

import msgpack

from agent.config import LedgerConfig
from agent.core.chain import ChainState, Sealer
from agent.core.keys import generate_signer
from agent.ledger import Ledger
from agent.spool import Spool

CAP = 16 * 1024


def _ledger(tmp_path, **cfg) -> tuple[Ledger, Spool]:
    spool = Spool(tmp_path / "s.db", synchronous="off", max_bytes=1 << 30)
    state = ChainState("dev-caps", 1, 0, 0, bytes(32), os.urandom(32))
    return Ledger(spool, Sealer(state, generate_signer()), LedgerConfig(**cfg)), spool


def _sizes(spool: Spool) -> list[tuple[int, int]]:
    return [(len(b.records), sum(map(len, b.records))) for b in spool.iter_blocks()]


def _run(tmp_path, feed, **cfg) -> list[tuple[int, int]]:
    async def main() -> list[tuple[int, int]]:
        ledger, spool = _ledger(tmp_path, **cfg)
        feed(ledger)
        await ledger.stop({"kind": "agent", "api": "agent.stop"})
        try:
            return _sizes(spool)
        finally:
            spool.close()
    return asyncio.run(main())


def test_raw_bodies_never_take_a_checkpoint_past_the_byte_cap(tmp_path):
    bodies = [msgpack.packb({"api": "diag.upload", "x": {"blob": os.urandom(900 + 37 * (i % 50))}}) for i in range(400)]

    def feed(ledger: Ledger) -> None:
        for i in range(0, len(bodies), 64):  # as recb frames arrive
            assert ledger.append_raw_batch(bodies[i:i + 64], [None] * len(bodies[i:i + 64])) == []

    sizes = _run(tmp_path, feed, checkpoint_records=1024, checkpoint_bytes=CAP)
    assert sum(n for n, _ in sizes) == 400 + 1  # every record kept (and the stop record)
    assert max(b for _, b in sizes) <= CAP
    assert sum(b for _, b in sizes if b > CAP // 2) >= 0.8 * sum(b for _, b in sizes)  # and filled, not cut tiny


def test_decoded_records_are_cut_by_bytes_too(tmp_path):
    def feed(ledger: Ledger) -> None:
        for i in range(40):
            ledger.append_batch([{"api": "diag.upload", "x": {"blob": os.urandom(1500)}} for _ in range(4)])

    sizes = _run(tmp_path, feed, checkpoint_records=1024, checkpoint_bytes=CAP)
    assert sum(n for n, _ in sizes) == 161
    assert max(b for _, b in sizes) <= CAP + 4 * 1600  # at most one input batch over the cap
    assert len(sizes) >= 240_000 // CAP


def test_a_record_larger_than_the_cap_gets_a_checkpoint_of_its_own(tmp_path):
    big = msgpack.packb({"api": "diag.upload", "x": {"blob": os.urandom(CAP + 100)}})
    small = msgpack.packb({"api": "x"})

    def feed(ledger: Ledger) -> None:
        ledger.append_raw_batch([small, small, big, small], [None] * 4)

    sizes = _run(tmp_path, feed, checkpoint_records=1024, checkpoint_bytes=CAP)
    assert [n for n, _ in sizes] == [2, 1, 1, 1]  # [small, small] [big] [small] [stop]


def test_the_record_count_still_cuts_small_records(tmp_path):
    body = msgpack.packb({"api": "ocpp.Heartbeat"})

    def feed(ledger: Ledger) -> None:
        for _ in range(10):
            ledger.append_raw_batch([body] * 64, [None] * 64)

    sizes = _run(tmp_path, feed, checkpoint_records=256, checkpoint_bytes=1 << 20)
    assert [n for n, _ in sizes] == [256, 256, 128, 1]  # 640 records; the stop record seals alone


def test_single_appends_are_cut_by_bytes(tmp_path):
    def feed(ledger: Ledger) -> None:
        for _ in range(30):
            ledger.append({"api": "diag.upload", "x": {"blob": os.urandom(2000)}})

    sizes = _run(tmp_path, feed, checkpoint_records=1024, checkpoint_bytes=CAP)
    assert sum(n for n, _ in sizes) == 31 and len(sizes) >= 4
    assert max(b for _, b in sizes) <= CAP + 2100
