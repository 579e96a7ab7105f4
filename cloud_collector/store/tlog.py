"""Store methods of the transparency log and of evidence bundles (migration 0003_tlog.sql).

A mixin over the store's two primitives, ``self._q(sql, args)`` and ``self.transaction()``,
so it runs unchanged on SQLite and PostgreSQL. Every read is an index lookup or an index
range (no full scans): leaves by ``idx`` or ``(dev, cp)``, tiles by ``(level, idx)``,
checkpoints by ``(dev, cp)``, records by ``(dev, seq)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..errors import StoreError

_INSERT_CHUNK = 200  # rows per multi-row INSERT (SQLite allows 32766 parameters; 5 per row)
_DELETE_CHUNK = 500


class TlogStore:
    _q: Callable[..., list[tuple]]
    transaction: Callable[[], AbstractContextManager[None]]

    # --- written by ingest (inside its transaction) --------------------------------
    def tlog_queue(self, dev: str, cp: int, cp_hash: bytes, received_ms: int) -> None:
        self._q("INSERT INTO tlog_queue (dev, cp, hash, received_ms) VALUES (?, ?, ?, ?)",
                (dev, cp, cp_hash, received_ms))

    # --- integration (inside one transaction) -------------------------------------
    def tlog_begin(self, origin: str, vkey: str) -> int:
        """Lock the log's state row and return its size; the first call names the log."""
        self._q("INSERT INTO tlog_state (id, size, origin, vkey) VALUES (1, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                (origin, vkey))
        rows = self._q("UPDATE tlog_state SET size = size WHERE id = 1 RETURNING size, origin, vkey")
        size, have_origin, have_vkey = rows[0]
        if (have_origin, have_vkey) != (origin, vkey):
            raise StoreError(f"the log is {have_origin!r} with key {have_vkey!r}; this collector's log key is {vkey!r}")
        return int(size)

    def tlog_queued(self, limit: int) -> list[tuple[int, str, int, bytes, int]]:
        return [(i, d, c, bytes(h), r) for i, d, c, h, r in self._q(
            "SELECT id, dev, cp, hash, received_ms FROM tlog_queue ORDER BY id LIMIT ?", (limit,))]

    def tlog_queue_length(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM tlog_queue")[0][0])

    def tlog_append(self, first_idx: int, rows: Sequence[tuple[int, str, int, bytes, int]],
                    tiles: dict[tuple[int, int], bytes]) -> None:
        """Leaves ``first_idx..`` from queue rows, the tiles they changed; the rows leave the queue."""
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start:start + _INSERT_CHUNK]
            args: list[Any] = []
            for k, (_, dev, cp, h, received) in enumerate(chunk):
                args += [first_idx + start + k, dev, cp, h, received]
            self._q("INSERT INTO tlog_leaves (idx, dev, cp, hash, received_ms) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)), tuple(args))
        # by id, not "id <= last": on PostgreSQL a row with a smaller id can commit after our read
        for start in range(0, len(rows), _DELETE_CHUNK):
            ids = tuple(r[0] for r in rows[start:start + _DELETE_CHUNK])
            self._q(f"DELETE FROM tlog_queue WHERE id IN ({', '.join('?' * len(ids))})", ids)
        for (level, idx), data in tiles.items():
            self._q("INSERT INTO tlog_tiles (level, idx, hashes) VALUES (?, ?, ?) "
                    "ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes", (level, idx, data))

    def tlog_set_head(self, size: int, root: bytes, note: str, now_ms: int) -> None:
        self._q("INSERT INTO tlog_heads (size, root, note, created_ms) VALUES (?, ?, ?, ?)", (size, root, note, now_ms))
        self._q("UPDATE tlog_state SET size = ? WHERE id = 1", (size,))

    # --- reads ----------------------------------------------------------------------
    def tlog_identity(self) -> tuple[str, str] | None:
        """(origin, vkey) of the log, once it has integrated anything."""
        rows = self._q("SELECT origin, vkey FROM tlog_state WHERE id = 1")
        return (rows[0][0], rows[0][1]) if rows else None

    def tlog_tile(self, level: int, idx: int) -> bytes | None:
        rows = self._q("SELECT hashes FROM tlog_tiles WHERE level = ? AND idx = ?", (level, idx))
        return bytes(rows[0][0]) if rows else None

    def tlog_head(self, size: int | None = None) -> tuple[int, bytes, str] | None:
        """(size, root, signed note) of the latest checkpoint, or of the one of ``size``."""
        if size is None:
            rows = self._q("SELECT size, root, note FROM tlog_heads ORDER BY size DESC LIMIT 1")
        else:
            rows = self._q("SELECT size, root, note FROM tlog_heads WHERE size = ?", (size,))
        return (int(rows[0][0]), bytes(rows[0][1]), rows[0][2]) if rows else None

    def tlog_leaf_of(self, dev: str, cp: int, cp_hash: bytes) -> tuple[int, int] | None:
        """(leaf index, received_ms) of a device checkpoint in the log."""
        rows = self._q("SELECT idx, received_ms, hash FROM tlog_leaves WHERE dev = ? AND cp = ? ORDER BY idx DESC",
                       (dev, cp))
        for idx, received, h in rows:
            if bytes(h) == cp_hash:
                return int(idx), int(received)
        return None

    def tlog_leaves(self, start: int, count: int) -> list[tuple[str, int, bytes, int]]:
        return [(d, c, bytes(h), r) for d, c, h, r in self._q(
            "SELECT dev, cp, hash, received_ms FROM tlog_leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, start + count))]

    def tlog_add_cosig(self, size: int, witness: str, line: str, now_ms: int) -> None:
        self._q("INSERT INTO tlog_cosigs (size, witness, line, received_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, received_ms = excluded.received_ms",
                (size, witness, line, now_ms))

    def tlog_cosigs(self, size: int) -> list[tuple[str, str]]:
        """(witness verifier key, cosignature line) received for the checkpoint of ``size``."""
        return [(w, line) for w, line in self._q(
            "SELECT witness, line FROM tlog_cosigs WHERE size = ? ORDER BY witness", (size,))]

    def tlog_witness_size(self, witness: str) -> int:
        """The largest size this witness (verifier key) has cosigned for us; 0 if none."""
        rows = self._q("SELECT size FROM tlog_cosigs WHERE witness = ? ORDER BY size DESC LIMIT 1", (witness,))
        return int(rows[0][0]) if rows else 0

    # --- evidence and export reads ----------------------------------------------------
    def alert_evidence_refs(self, alert_id: int) -> list[dict[str, Any]] | None:
        """The evidence refs of an alert from the base alerts table: [(dev, seq_first, seq_last)].
        None for an unknown alert; [] for one without a record range."""
        rows = self._q("SELECT dev, seq_first, seq_last FROM alerts WHERE id = ?", (alert_id,))
        if not rows:
            return None
        dev, first, last = rows[0]
        return [] if first is None or last is None else [{"dev": dev, "first": int(first), "last": int(last)}]

    def device_keys(self, dev: str) -> list[tuple[str, str, bytes, int, int | None, int | None]]:
        """(kid, alg, public key, first_cp, last_cp, revoked_from_cp) of a device, oldest first."""
        return [(k, a, bytes(p), f, lc, rv) for k, a, p, f, lc, rv in self._q(
            "SELECT kid, alg, pub, first_cp, last_cp, revoked_from_cp FROM device_keys WHERE dev = ? ORDER BY first_cp",
            (dev,))]

    def record_cp(self, dev: str, seq: int) -> int | None:
        rows = self._q("SELECT cp FROM records WHERE dev = ? AND seq = ?", (dev, seq))
        return int(rows[0][0]) if rows else None

    def checkpoint_rows(self, dev: str, first_cp: int, last_cp: int, limit: int) -> list[tuple[int, int, int, bytes]]:
        """(cp, first_seq, last_seq, message) of a device's stored checkpoints first_cp..last_cp."""
        return [(c, f, lst, bytes(m)) for c, f, lst, m in self._q(
            "SELECT cp, first_seq, last_seq, message FROM checkpoints WHERE dev = ? AND cp >= ? AND cp <= ? "
            "ORDER BY cp LIMIT ?", (dev, first_cp, last_cp, limit))]

    def checkpoint_message(self, dev: str, cp: int) -> bytes | None:
        rows = self._q("SELECT message FROM checkpoints WHERE dev = ? AND cp = ?", (dev, cp))
        return bytes(rows[0][0]) if rows else None

    def checkpoint_boot(self, dev: str, cp: int) -> int | None:
        rows = self._q("SELECT boot FROM checkpoints WHERE dev = ? AND cp = ?", (dev, cp))
        return int(rows[0][0]) if rows else None

    def cp_bounds(self, dev: str) -> tuple[int, int] | None:
        lo = self._q("SELECT cp FROM checkpoints WHERE dev = ? ORDER BY cp LIMIT 1", (dev,))
        hi = self._q("SELECT cp FROM checkpoints WHERE dev = ? ORDER BY cp DESC LIMIT 1", (dev,))
        return (int(lo[0][0]), int(hi[0][0])) if lo and hi else None

    def record_bytes(self, dev: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """(seq, bytes) of records first..last (an index range on (dev, seq))."""
        return [(s, bytes(d)) for s, d in self._q(
            "SELECT seq, data FROM records WHERE dev = ? AND seq >= ? AND seq <= ? ORDER BY seq", (dev, first, last))]

    def iter_checkpoints(self, dev: str, first_cp: int, last_cp: int, chunk: int = 256) -> Iterator[tuple[int, int, int, bytes]]:
        cp = first_cp
        while cp <= last_cp:
            rows = self.checkpoint_rows(dev, cp, last_cp, chunk)
            if not rows:
                return
            yield from rows
            cp = rows[-1][0] + 1
