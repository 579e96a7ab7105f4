"""Stored blocks: each checkpoint's records are zlib-compressed (``[spool] compress``), so
the bytes counted against ``max_bytes`` shrink; rows written before (uncompressed) still
read; a damaged or inflating blob, or a damaged page of the blocks tree, makes damaged
blocks, never a crash, a memory blow-up or a spool that stops being read."""

from __future__ import annotations

import os
import sqlite3
import zlib

import msgpack

from agent.core.chain import ChainState, Sealer
from agent.core.keys import generate_signer
from agent.spool import Spool


def _sealed(n_blocks: int, per: int = 200):
    sealer = Sealer(ChainState("dev-z", 1, 0, 0, bytes(32), os.urandom(32)), generate_signer())
    out = []
    for b in range(n_blocks):
        sealer.append_batch([{"api": "ocpp.MeterValues", "sub": "conn-1", "st": 200, "x": {"i": b * per + i}}
                             for i in range(per)], 10, 20)
        out.append(sealer.seal(mono=10, wall=20, reason="size"))
    return out


def test_compressed_blocks_read_back_exactly_and_take_a_fraction_of_the_bytes(tmp_path):
    blocks = _sealed(4)
    plain = Spool(tmp_path / "plain.db", synchronous="off", compress=False)
    packed = Spool(tmp_path / "packed.db", synchronous="off")
    try:
        plain.commit(blocks)
        packed.commit(blocks)
        assert packed.bytes_used * 3 < plain.bytes_used  # these records compress > 3x
        for spool in (plain, packed):
            got = list(spool.iter_blocks())
            assert [b.records for b in got] == [b.records for b in blocks] and not spool.damaged
    finally:
        plain.close()
        packed.close()


def test_rows_written_uncompressed_still_read_in_a_compressing_spool(tmp_path):
    first, second = _sealed(2)
    old = Spool(tmp_path / "s.db", synchronous="off", compress=False)
    old.commit([first])
    old.close()
    new = Spool(tmp_path / "s.db", synchronous="off")
    try:
        new.commit([second])
        assert [b.records for b in new.iter_blocks()] == [first.records, second.records] and not new.damaged
    finally:
        new.close()


def test_a_damaged_or_inflating_blob_is_a_damaged_block(tmp_path):
    blocks = _sealed(3)
    spool = Spool(tmp_path / "s.db", synchronous="off")
    spool.commit(blocks)
    spool.close()
    bomb = zlib.compress(msgpack.packb([b"\x00" * (40 << 20)]), 9)  # inflates past the 32 MiB cap
    db = sqlite3.connect(tmp_path / "s.db")
    blob = db.execute("SELECT records FROM blocks WHERE cp = ?", (blocks[0].cp,)).fetchone()[0]
    db.execute("UPDATE blocks SET records = ? WHERE cp = ?", (blob[:-9] + b"garbage!!", blocks[0].cp))
    db.execute("UPDATE blocks SET records = ? WHERE cp = ?", (bomb, blocks[1].cp))
    db.commit()
    db.close()
    spool = Spool(tmp_path / "s.db", synchronous="off")
    try:
        got = list(spool.iter_blocks())
        assert [b.damaged for b in got] == [True, True, False]
        assert got[2].records == blocks[2].records and spool.damaged == {blocks[0].cp, blocks[1].cp}
    finally:
        spool.close()


def test_inflating_stops_at_the_cap_instead_of_allocating_the_bomb():
    import tracemalloc

    import pytest

    from agent.spool_read import _inflate
    bomb = zlib.compress(b"\x00" * (200 << 20), 9)  # 200 MiB of zeros in ~200 KiB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            _inflate(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20  # stopped at the 32 MiB cap (its buffer may double), never held the 200 MiB


def test_a_damaged_page_in_the_blocks_tree_hides_only_the_checkpoints_behind_it(tmp_path):
    """When the range scan cannot cross a damaged page, the checkpoints are looked up one by
    one: those behind the damage come back damaged, the others are still read (and shipped)."""
    blocks = _sealed(6, per=20)
    spool = Spool(tmp_path / "s.db", synchronous="off")
    spool.commit(blocks)
    real = spool._r
    hidden = {blocks[2].cp, blocks[3].cp}

    class DamagedTree:
        def execute(self, sql, args=()):
            if "ORDER BY cp LIMIT" in sql and args and args[0] < max(hidden):
                raise sqlite3.DatabaseError("database disk image is malformed")
            if "WHERE cp = ?" in sql and args and args[0] in hidden:
                raise sqlite3.DatabaseError("database disk image is malformed")
            return real.execute(sql, args)

    spool._r = DamagedTree()
    try:
        got = list(spool.iter_blocks())
        assert [b.cp for b in got] == [b.cp for b in blocks]
        assert [b.damaged for b in got] == [b.cp in hidden for b in blocks]
        assert [b.records for b in got if not b.damaged] == [b.records for b in blocks if b.cp not in hidden]
    finally:
        spool._r = real
        spool.close()
