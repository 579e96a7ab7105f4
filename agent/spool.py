"""The spool: sealed checkpoints and their records on flash until the collector's receipt.

SQLite (stdlib ``sqlite3``) in WAL mode with ``synchronous=FULL`` (every commit is fsynced;
``synchronous="normal"``/``"off"`` trade that for latency, see ``SpoolConfig``) and ``secure_delete=ON``. One transaction per commit holds the new checkpoints, their
records, the chain state (which carries the forward-secure key K_next) and the counters,
so after a crash the file holds either all of a checkpoint or none of it.

Tables: ``blocks`` (one row per checkpoint: its COSE message and its records as one msgpack
array of the record bytes, so a checkpoint is one row write, not 1024; with ``compress``
that array is zlib-compressed (level 1, ~5x on real records): a blob starting 0x78 is zlib,
a msgpack array never starts so. ``max_bytes`` counts what is stored, so the same flash
holds ~5x the records through an offline spell, and writes ~5x fewer bytes),
``state_a``/``state_b`` (two checksummed copies of the chain state on separate pages),
``meta`` (where the spool starts after receipts, last receipt), ``counters`` (drops and
damage by reason), ``evictions`` (ranges evicted for space, with their last checkpoint hash),
``journal`` (records committed before their checkpoint is sealed, so a verdict can go back
without waiting for a signature; the commit that stores their checkpoint deletes them, and a
start after a crash seals what is left, see ``agent.daemon.recover_journal``).

Thread use: one writer connection (commits, receipts) and one reader connection (uplink,
export, status), each behind its own lock; WAL lets them run at once.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from . import errors
from .core.chain import ChainState, Sealed
from .core.record import SECURITY_KINDS
from .spool_read import SpooledCheckpoint, SpoolReading

__all__ = ["Eviction", "Spool", "SpooledCheckpoint", "Tail", "decode_state", "encode_state"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks(cp INTEGER PRIMARY KEY, first INTEGER NOT NULL, last INTEGER NOT NULL,
    boot INTEGER NOT NULL, sec INTEGER NOT NULL, nbytes INTEGER NOT NULL, hash BLOB NOT NULL,
    message BLOB NOT NULL, records BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state_a(id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state_b(id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS evictions(first_cp INTEGER PRIMARY KEY, last_cp INTEGER NOT NULL,
    first INTEGER NOT NULL, last INTEGER NOT NULL, last_cp_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS journal(seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL);
"""
_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Eviction:
    """A contiguous run of api-only checkpoints to drop for space (DESIGN §4)."""

    first_cp: int
    last_cp: int
    first: int
    last: int
    last_cp_hash: bytes
    nbytes: int
    records: int


@dataclass(frozen=True, slots=True)
class Tail:
    """Where the chain ends according to the spool's contents (for rebuilding state)."""

    next_seq: int
    next_cp: int
    prev_cp_hash: bytes | None
    boot: int


def encode_state(state: ChainState) -> bytes:
    body = msgpack.packb([_STATE_VERSION, state.device_id, state.boot, state.next_seq, state.next_cp,
                          state.prev_cp_hash, state.fs_key], use_bin_type=True)
    return body + hashlib.sha256(body).digest()[:16]


def decode_state(blob: bytes) -> ChainState | None:
    """The state in ``blob``, or None when it is damaged."""
    if not isinstance(blob, bytes) or len(blob) < 17:
        return None
    body, check = blob[:-16], blob[-16:]
    if hashlib.sha256(body).digest()[:16] != check:
        return None
    try:
        v, dev, boot, next_seq, next_cp, prev, fs = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if v != _STATE_VERSION:
        return None
    return ChainState(dev, boot, next_seq, next_cp, prev, fs)


_packb = msgpack.Packer(use_bin_type=True).pack


def _connect(path: str, *, readonly: bool, cache_kib: int) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute(f"PRAGMA cache_size=-{cache_kib}")
    conn.execute("PRAGMA mmap_size=0")
    return conn


class Spool(SpoolReading):
    def __init__(self, path: Path | str, *, max_bytes: int = 64 * 1024 * 1024, cache_kib: int = 1024,
                 readonly: bool = False, synchronous: str = "full", compress: bool = True) -> None:
        if synchronous not in ("full", "normal", "off"):
            raise ValueError(f"synchronous must be full, normal or off, not {synchronous!r}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self.readonly = readonly
        self.synchronous = synchronous
        self.compress = compress
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._damaged: set[int] = set()
        self.open_problems: list[str] = []  # what could not be read at open (the agent reports it)
        try:
            if readonly:
                if not Path(self.path).exists():
                    raise errors.NotInitialised(self.path)
                self._w = None
            else:
                self._w = _connect(self.path, readonly=False, cache_kib=cache_kib)
                mode = self._w.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise errors.SpoolError(f"journal_mode is {mode}, WAL needed")
                for pragma in (f"synchronous={synchronous.upper()}", "secure_delete=ON", "journal_size_limit=4194304",
                               "temp_store=MEMORY"):
                    self._w.execute(f"PRAGMA {pragma}")
                self._w.executescript(SCHEMA)
            # the reader (uplink, status, export) streams blocks once: a small cache will do
            self._r = _connect(self.path, readonly=True, cache_kib=min(cache_kib, 128))
            self._r.execute("PRAGMA query_only=ON")
        except sqlite3.DatabaseError as exc:
            raise errors.SpoolCorrupt(f"cannot open {Path(self.path).name}: {exc}") from None
        # Damage below the schema must not keep the agent from starting (it skips damaged blocks)
        try:
            self.bytes_used = int(self._r.execute("SELECT COALESCE(SUM(nbytes), 0) FROM blocks").fetchone()[0])
        except sqlite3.DatabaseError:
            self.bytes_used = self._file_bytes()
            self.open_problems.append("bytes_used_estimated")
        try:
            self._journal_max = self._journal_high()
        except sqlite3.DatabaseError:
            self._journal_max = 1 << 62  # unknown: every checkpoint commit tries the delete
            self.open_problems.append("journal_unreadable")

    def _file_bytes(self) -> int:
        try:
            r = self._r
            return int(r.execute("PRAGMA page_count").fetchone()[0] * r.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.DatabaseError:
            return Path(self.path).stat().st_size

    def close(self) -> None:
        """Reader first: the writer closing last folds the WAL back into the main file."""
        for conn in (self._r, self._w):
            if conn is not None:
                conn.close()

    # --- chain state -----------------------------------------------------------------
    def load_state(self) -> tuple[ChainState | None, list[str]]:
        """The newest intact copy of the chain state, and the problems found on the way."""
        problems: list[str] = []
        found: list[ChainState] = []
        for table in ("state_a", "state_b"):
            try:
                row = self._read_one(f"SELECT body FROM {table} WHERE id = 1")
            except sqlite3.DatabaseError:
                problems.append(f"{table} unreadable")
                continue
            if row is None:
                problems.append(f"{table} missing")
                continue
            state = decode_state(row[0])
            if state is None:
                problems.append(f"{table} damaged")
            else:
                found.append(state)
        if not found:
            return None, problems
        return max(found, key=lambda s: (s.next_cp, s.boot)), problems

    def save_state(self, state: ChainState) -> None:
        """Persist the state alone (e.g. the boot epoch at start), fsynced."""
        with self._wlock:
            self._txn(lambda c: self._put_state(c, state))

    def tail(self) -> Tail:
        """Where the chain ends by the spool's own contents: last block, evictions, start, records."""
        next_seq, next_cp, prev, boot = 0, 0, None, 0
        start = self.start()
        if start is not None:
            next_seq, next_cp, prev, boot = start["seq"], start["cp"], start["prev_cp_hash"], start["boot"]
        for sql in ("SELECT last_cp, last, last_cp_hash, NULL FROM evictions ORDER BY last_cp DESC LIMIT 1",
                    "SELECT cp, last, hash, boot FROM blocks ORDER BY cp DESC LIMIT 1"):
            try:
                row = self._read_one(sql)
            except sqlite3.DatabaseError:
                continue
            if row is not None and row[0] + 1 > next_cp:
                next_cp, next_seq, prev = row[0] + 1, max(next_seq, row[1] + 1), row[2]
                boot = row[3] if row[3] is not None else boot
        try:
            row = self._read_one("SELECT MAX(last) FROM blocks")
            if row is not None and row[0] is not None:
                next_seq = max(next_seq, row[0] + 1)
        except sqlite3.DatabaseError:
            pass
        return Tail(next_seq, next_cp, prev, boot)

    # --- writing ---------------------------------------------------------------------
    def commit(self, blocks: Sequence[Sealed], *, evict: Eviction | None = None,
               counters: Mapping[str, int] | None = None, wait: bool = True,
               journal: Sequence[tuple[int, str, bytes]] = ()) -> bool:
        """Store sealed checkpoints with their records and the state after the last one, and
        ``journal`` rows (seq, kind, record bytes: records not sealed yet): one transaction
        (fsynced with ``synchronous="full"``). Journal rows the stored checkpoints cover are
        deleted in the same transaction. With ``wait=False`` nothing is done and False
        returned when another write (a receipt) holds the writer."""
        if not blocks and not journal:
            return True
        added = 0
        rows = []
        for b in blocks:
            packed = _packb(b.records)
            if self.compress:  # zlib releases the GIL: this runs beside the event loop
                packed = zlib.compress(packed, 1)
            nbytes = len(b.message) + len(packed)
            sec = 0 if SECURITY_KINDS.isdisjoint(b.kinds) else 1
            rows.append((b.cp, b.first, b.last, b.state.boot, sec, nbytes, b.hash, b.message, packed))
            added += nbytes
        covered = blocks[-1].last if blocks else -1
        journal = [row for row in journal if row[0] > covered]
        journal_max = max(self._journal_max, journal[-1][0] if journal else -1)
        if journal_max <= covered:
            journal_max = -1  # every journal row is in a stored checkpoint now

        def work(c: sqlite3.Connection) -> int:
            if rows:
                c.executemany("INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?,?)", rows)
            if journal:
                c.executemany("INSERT OR REPLACE INTO journal VALUES (?,?,?)", journal)
            if blocks and self._journal_max >= blocks[0].first:
                c.execute("DELETE FROM journal WHERE seq <= ?", (covered,))
            freed = 0
            if evict is not None:
                freed = self._delete_blocks(c, "cp BETWEEN ? AND ?", (evict.first_cp, evict.last_cp))
                c.execute("INSERT OR REPLACE INTO evictions VALUES (?,?,?,?,?)",
                          (evict.first_cp, evict.last_cp, evict.first, evict.last, evict.last_cp_hash))
            if counters:
                c.executemany("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET n = excluded.n",
                              counters.items())
            if blocks:
                self._put_state(c, blocks[-1].state)
            return freed

        if not self._wlock.acquire(wait):
            return False
        try:
            freed = self._txn(work)
            self.bytes_used += added - freed
            self._journal_max = journal_max
        finally:
            self._wlock.release()
        return True

    def clear_journal(self) -> int:
        """Delete every journal row (after recovery sealed or gave up on them); returns how many."""
        with self._wlock:
            n = self._txn(lambda c: c.execute("DELETE FROM journal").rowcount)
            self._journal_max = -1
        return int(n)

    def _put_state(self, c: sqlite3.Connection, state: ChainState) -> None:
        body = encode_state(state)
        for table in ("state_a", "state_b"):
            c.execute(f"INSERT OR REPLACE INTO {table} VALUES (1, ?)", (body,))

    def _delete_blocks(self, c: sqlite3.Connection, where: str, args: tuple) -> int:
        row = c.execute(f"SELECT COALESCE(SUM(nbytes), 0) FROM blocks WHERE {where}", args).fetchone()
        c.execute(f"DELETE FROM blocks WHERE {where}", args)
        return int(row[0])

    def _txn(self, work: Any) -> Any:
        if self._w is None:
            raise errors.SpoolError("opened read-only")
        c = self._w
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                result = work(c)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return result
        except sqlite3.DatabaseError as exc:
            raise errors.SpoolError(f"{type(exc).__name__}: {exc}") from None

    def plan_eviction(self, need_bytes: int) -> Eviction | None:
        """The oldest contiguous run of checkpoints without security-class records, ≥ need_bytes if possible."""
        run: list[tuple] = []
        freed = 0
        try:
            with self._rlock:
                cur = self._r.execute("SELECT cp, first, last, sec, nbytes, hash FROM blocks ORDER BY cp")
                for cp, first, last, sec, nbytes, h in cur:
                    keep = sec or cp in self._damaged
                    if run and (keep or cp != run[-1][0] + 1):
                        break  # the run ends at a kept checkpoint (or a gap)
                    if keep:
                        continue
                    run.append((cp, first, last, nbytes, h))
                    freed += nbytes
                    if freed >= need_bytes:
                        break
                cur.close()
        except sqlite3.DatabaseError:
            return None
        if not run:
            return None
        n = run[-1][2] - run[0][1] + 1
        return Eviction(run[0][0], run[-1][0], run[0][1], run[-1][2], run[-1][4], freed, n)

    # --- receipts --------------------------------------------------------------------
    def apply_receipt(self, upto_seq: int, cp: int, cp_hash: bytes) -> int:
        """Delete every block up to checkpoint ``cp`` if its hash is ours; idempotent."""
        def work(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT last, hash, boot FROM blocks WHERE cp = ?", (cp,)).fetchone()
            if row is None:
                row = c.execute("SELECT last, last_cp_hash, NULL FROM evictions WHERE last_cp = ?", (cp,)).fetchone()
            if row is None:
                start = self._start(c)
                if start is not None and cp < start["cp"] and upto_seq < start["seq"]:
                    return 0  # already applied
                raise errors.ReceiptMismatch(cp, upto_seq, "no such checkpoint in the spool")
            last, h, boot = row
            if h != cp_hash:
                raise errors.ReceiptMismatch(cp, upto_seq, "checkpoint hash differs from ours")
            if last != upto_seq:
                raise errors.ReceiptMismatch(cp, upto_seq, f"checkpoint ends at seq {last}")
            n = c.execute("SELECT COALESCE(SUM(last - first + 1), 0) FROM blocks WHERE cp <= ?", (cp,)).fetchone()[0]
            freed = self._delete_blocks(c, "cp <= ?", (cp,))
            c.execute("DELETE FROM evictions WHERE last_cp <= ?", (cp,))
            if boot is None:
                boot = (self._start(c) or {}).get("boot", 0)
            start = {"seq": upto_seq + 1, "cp": cp + 1, "prev_cp_hash": cp_hash, "boot": boot}
            c.execute("INSERT OR REPLACE INTO meta VALUES ('start', ?)", (msgpack.packb(start),))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('last_receipt', ?)", (msgpack.packb([cp, upto_seq]),))
            self.bytes_used -= freed
            return int(n)

        with self._wlock:
            return self._txn(work)

