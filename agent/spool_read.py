"""The spool's reading side (uplink, export, status, scrub): blocks checked against their own
checkpoint as they are read, damaged ones marked and skipped, never raised.

``Spool`` (agent/spool.py) is a ``SpoolReading`` with the writer connection; this class needs
only the reader connection and its lock.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from .core import merkle
from .core.checkpoint import parse as parse_checkpoint
from .core.errors import CheckpointMalformed
from .core.record import leaf_hash
from .errors import SpoolCorrupt


@dataclass(frozen=True, slots=True)
class SpooledCheckpoint:
    cp: int
    first: int
    last: int
    message: bytes
    hash: bytes
    records: list[bytes]
    damaged: bool = False



_ZLIB = b"\x78"                # first byte of a zlib stream (deflate, 32 KiB window)
_MAX_BLOCK_BYTES = 32 << 20    # a stored block never inflates past this (checkpoint_bytes ≤ 16 MiB)


def _inflate(blob: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(blob, _MAX_BLOCK_BYTES)
    if d.unconsumed_tail or not d.eof:
        raise ValueError("compressed records too large or truncated")
    return out


def _unpack_records(blob: bytes) -> list[bytes]:
    """The record bytes of one block; ValueError when the blob is not an array of bin."""
    try:
        if blob[:1] == _ZLIB:
            blob = _inflate(blob)
    except (zlib.error, ValueError) as exc:
        raise ValueError(f"compressed records: {type(exc).__name__}") from None
    try:
        records = msgpack.unpackb(blob, raw=False, max_bin_len=1 << 20, max_array_len=1 << 20)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(type(exc).__name__) from None
    if type(records) is not list or not all(type(r) is bytes for r in records):
        raise ValueError("not an array of record bytes")
    return records


class SpoolReading:
    _r: sqlite3.Connection
    _rlock: threading.Lock
    _damaged: set[int]
    bytes_used: int
    max_bytes: int

    def _journal_high(self) -> int:
        try:
            return int(self._r.execute("SELECT COALESCE(MAX(seq), -1) FROM journal").fetchone()[0])
        except sqlite3.OperationalError:  # read-only open of a spool from before the journal
            return -1

    def _journal_count(self) -> int:
        """Records committed and answered but not sealed yet (caller holds the read lock)."""
        try:
            return int(self._r.execute("SELECT COUNT(*) FROM journal").fetchone()[0])
        except sqlite3.OperationalError:  # a spool from before the journal, opened read-only
            return 0

    def journal(self) -> list[tuple[int, str, bytes]]:
        """The journal's rows (records committed but not sealed), in seq order; SpoolCorrupt
        when they cannot be read."""
        try:
            with self._rlock:
                return [(int(seq), str(kind), bytes(data)) for seq, kind, data in
                        self._r.execute("SELECT seq, kind, data FROM journal ORDER BY seq")]
        except sqlite3.DatabaseError as exc:
            raise SpoolCorrupt(f"journal unreadable: {exc}") from None

    def _start(self, c: sqlite3.Connection) -> dict[str, Any] | None:
        row = c.execute("SELECT value FROM meta WHERE key = 'start'").fetchone()
        return msgpack.unpackb(row[0], raw=False) if row else None

    def start(self) -> dict[str, Any] | None:
        """Where the spool begins after receipts deleted older blocks (None: from genesis)."""
        with self._rlock:
            try:
                return self._start(self._r)
            except (sqlite3.DatabaseError, ValueError, msgpack.UnpackException):
                return None

    def last_receipt(self) -> tuple[int, int] | None:
        row = self._read_one("SELECT value FROM meta WHERE key = 'last_receipt'")
        return tuple(msgpack.unpackb(row[0])) if row else None  # type: ignore[return-value]

    # --- reading ---------------------------------------------------------------------
    def _read_one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._rlock:
            return self._r.execute(sql, args).fetchone()

    def read_block(self, cp: int, first: int, last: int) -> SpooledCheckpoint:
        """One block, checked against its own checkpoint (count and Merkle root); damaged if not."""
        try:
            with self._rlock:
                row = self._r.execute("SELECT message, hash, records FROM blocks WHERE cp = ?", (cp,)).fetchone()
            records = _unpack_records(row[2])
            parsed = parse_checkpoint(row[0])
            ok = (parsed.cp == cp and parsed.first == first and parsed.n == len(records)
                  and parsed.hash == row[1] and merkle.root([leaf_hash(r) for r in records]) == parsed.root)
        except (sqlite3.DatabaseError, CheckpointMalformed, TypeError, ValueError):
            ok, row = False, None
        if ok:
            return SpooledCheckpoint(cp, first, last, row[0], row[1], records)
        self._damaged.add(cp)
        return SpooledCheckpoint(cp, first, last, row[0] if row else b"", row[1] if row else b"", [], True)

    def _headers(self, after_cp: int | None, limit: int = 512,
                 below_cp: int | None = None) -> Iterator[tuple[int, int, int, int]]:
        lo, hi = -1 if after_cp is None else after_cp, (1 << 62) if below_cp is None else below_cp
        with self._rlock:
            try:
                return iter(self._r.execute(
                    "SELECT cp, first, last, nbytes FROM blocks WHERE cp > ? AND cp < ? ORDER BY cp LIMIT ?",
                    (lo, hi, limit)).fetchall())
            except sqlite3.DatabaseError:
                return iter(self._probe(lo, hi, limit))

    def _probe(self, lo: int, hi: int, limit: int) -> list[tuple[int, int, int, int]]:
        """The range scan crossed a damaged page of the blocks tree: look the checkpoints up
        one by one from ``lo``, so the ones behind other pages are still read (and shipped).
        One that cannot be looked up comes back as (cp, -1, -1, 0): read_block then marks it
        damaged. At most 4,096 lookups per call; the caller goes on from the last cp."""
        try:
            top = self._r.execute("SELECT MAX(cp) FROM blocks").fetchone()[0]
        except sqlite3.DatabaseError:
            return []  # not even the tree's right edge reads: nothing to go on
        start = self._start(self._r) if self._start_readable() else None
        cp = max(lo + 1, start["cp"] if start else 0)
        out: list[tuple[int, int, int, int]] = []
        end = min(hi - 1, top if top is not None else -1, cp + 4095)
        while cp <= end and len(out) < limit:
            try:
                row = self._r.execute("SELECT cp, first, last, nbytes FROM blocks WHERE cp = ?", (cp,)).fetchone()
            except sqlite3.DatabaseError:
                row = (cp, -1, -1, 0)
            if row is not None:
                out.append(tuple(row))  # type: ignore[arg-type]
            cp += 1
        return out

    def _start_readable(self) -> bool:
        try:
            self._start(self._r)
            return True
        except (sqlite3.DatabaseError, ValueError, msgpack.UnpackException):
            return False

    def unacked(self, after_cp: int | None, max_bytes: int) -> list[SpooledCheckpoint]:
        out: list[SpooledCheckpoint] = []
        total = 0
        try:
            headers = self._headers(after_cp)
        except sqlite3.DatabaseError:
            return out
        for cp, first, last, nbytes in headers:
            if out and total + nbytes > max_bytes:
                break
            out.append(self.read_block(cp, first, last))
            total += nbytes
        return out

    def iter_blocks(self) -> Iterator[SpooledCheckpoint]:
        """Every block in cp order (export)."""
        after: int | None = None
        while True:
            batch = list(self._headers(after))
            if not batch:
                return
            for cp, first, last, _ in batch:
                yield self.read_block(cp, first, last)
            after = batch[-1][0]

    def scrub(self, after_cp: int | None, limit: int, below_cp: int | None = None) -> int | None:
        """Check up to ``limit`` blocks after ``after_cp`` and below ``below_cp`` (damaged ones
        are noted); returns the last cp checked, or None at the end. Lets the daemon find damage
        before anyone reads it."""
        try:
            headers = list(self._headers(after_cp, limit, below_cp))
        except sqlite3.DatabaseError:
            return None
        for cp, first, last, _ in headers:
            self.read_block(cp, first, last)
        return headers[-1][0] if headers else None

    @property
    def damaged(self) -> frozenset[int]:
        return frozenset(self._damaged)

    def counters(self) -> dict[str, int]:
        with self._rlock:
            try:
                return {k: int(v) for k, v in self._r.execute("SELECT name, n FROM counters")}
            except sqlite3.DatabaseError:
                return {}

    def stats(self) -> dict[str, Any]:
        try:
            with self._rlock:
                r = self._r
                r.execute("BEGIN")  # one snapshot: a commit between the reads moves journal rows into blocks
                try:
                    blocks, first_cp, last_cp, first_seq, last_seq, records = r.execute(
                        "SELECT COUNT(*), MIN(cp), MAX(cp), MIN(first), MAX(last), "
                        "COALESCE(SUM(last - first + 1), 0) FROM blocks").fetchone()
                    pages = r.execute("PRAGMA page_count").fetchone()[0] * r.execute("PRAGMA page_size").fetchone()[0]
                    evicted = r.execute("SELECT COUNT(*), COALESCE(SUM(last - first + 1), 0) FROM evictions").fetchone()
                    journal = self._journal_count()
                finally:
                    r.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            return {"error": f"spool unreadable: {type(exc).__name__}", "bytes": self.bytes_used,
                    "max_bytes": self.max_bytes, "damaged_blocks": sorted(self._damaged)}
        receipt = self.last_receipt()
        return {
            "bytes": self.bytes_used, "max_bytes": self.max_bytes, "file_bytes": pages,
            "blocks": blocks, "records": records, "journal_records": journal,
            "unacked": None if not blocks else {"first_cp": first_cp, "last_cp": last_cp,
                                                "first_seq": first_seq, "last_seq": last_seq},
            "start": self.start(), "damaged_blocks": sorted(self._damaged),
            "evicted_ranges_kept": evicted[0],
            "last_receipt": None if receipt is None else {"cp": receipt[0], "upto_seq": receipt[1]},
        }

    def quick_check(self) -> list[str]:
        """SQLite's own structural check ("ok" → []); problems are reported, not raised."""
        try:
            with self._rlock:
                rows = [r[0] for r in self._r.execute("PRAGMA quick_check(20)")]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        return [] if rows == ["ok"] else rows
