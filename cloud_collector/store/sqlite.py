"""SQLite implementation of the collector store (WAL, one file, several processes)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack

from agent.core.export import Trust
from agent.core.verify import KeyInfo, VerifyState

from ..errors import RegistryError, StoreError
from . import Alert, DeviceRow
from .migrations import migrations
from .tlog import TlogStore

_DEVICE_COLS = "dev, enrolled_ms, last_seen_ms, last_cp_ms, records, checkpoints, next_seq, next_cp, boot, status, status_ms"


def _dumps(records: list[bytes]) -> bytes:
    return msgpack.packb(records, use_bin_type=True)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class SQLiteStore(TlogStore):
    def __init__(self, path: str, *, timeout_s: float = 30.0) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        self._lock = threading.RLock()
        self._depth = 0

    def _migrate(self) -> None:
        """Apply the migrations not yet recorded, each in its own transaction (several
        processes may open the same file at once: BEGIN IMMEDIATE makes them take turns)."""
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)")
        for m in migrations():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (m.version,)).fetchone():
                    self._db.execute("COMMIT")
                    continue
                for statement in _statements(m.sql):
                    self._db.execute(statement)
                self._db.execute("INSERT INTO schema_migrations (version, name, applied_ms) "
                                 "VALUES (?, ?, CAST(strftime('%s','now') AS INTEGER) * 1000)", (m.version, m.name))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- plumbing -------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: one writer at a time across processes; nested calls join."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"begin: {exc}") from None
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"commit: {exc}") from None

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{sql.split()[0].lower()}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- registry -------------------------------------------------------------------
    def enroll(self, trust: Trust, now_ms: int, *, replace: bool = False) -> None:
        g = VerifyState.genesis(trust.device_id, trust.fs_k0)
        with self.transaction():
            if self._q("SELECT 1 FROM devices WHERE dev = ?", (trust.device_id,)):
                if not replace:
                    raise RegistryError(f"device {trust.device_id!r} is already enrolled (use --replace)")
                for table in ("devices", "device_keys", "checkpoints", "records", "pending", "bridges"):
                    self._q(f"DELETE FROM {table} WHERE dev = ?", (trust.device_id,))
            self._q("INSERT INTO devices (dev, enrolled_ms, fs_k0, next_seq, next_cp, prev_cp_hash, boot, fs_key) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (trust.device_id, now_ms, trust.fs_k0, g.next_seq, g.next_cp, g.prev_cp_hash, g.boot, g.fs_key))
            for k in trust.keys.values():
                self._q("INSERT INTO device_keys (dev, kid, alg, pub, first_cp) VALUES (?, ?, ?, ?, ?)",
                        (trust.device_id, k.kid, k.alg, k.public, k.first_cp))
            self._audit(now_ms, "enroll", {"dev": trust.device_id, "kids": sorted(trust.keys)})

    def revoke(self, kid: str, from_cp: int, now_ms: int, dev: str | None = None) -> list[str]:
        with self.transaction():
            rows = self._q("SELECT dev FROM device_keys WHERE kid = ?" + (" AND dev = ?" if dev else ""),
                           (kid, dev) if dev else (kid,))
            if not rows:
                raise RegistryError(f"no device has key id {kid!r}")
            self._q("UPDATE device_keys SET revoked_from_cp = ? WHERE kid = ?" + (" AND dev = ?" if dev else ""),
                    (from_cp, kid, dev) if dev else (from_cp, kid))
            devs = sorted(r[0] for r in rows)
            self._audit(now_ms, "revoke", {"kid": kid, "from_cp": from_cp, "devs": devs})
            return devs

    def device_ids(self) -> set[str]:
        return {r[0] for r in self._q("SELECT dev FROM devices")}

    def _audit(self, now_ms: int, action: str, detail: dict) -> None:
        self._q("INSERT INTO audit (ts_ms, action, detail) VALUES (?, ?, ?)", (now_ms, action, json.dumps(detail)))

    # --- verification (inside transaction) ------------------------------------------
    def load_device(self, dev: str) -> DeviceRow | None:
        rows = self._q("SELECT fs_k0, next_seq, next_cp, prev_cp_hash, boot, fs_key, last_seen_ms, records, checkpoints "
                       "FROM devices WHERE dev = ?", (dev,))
        if not rows:
            return None
        fs_k0, next_seq, next_cp, prev, boot, fs_key, seen, nrec, ncp = rows[0]
        keys = {kid: KeyInfo(kid, alg, bytes(pub), first, last, revoked)
                for kid, alg, pub, first, last, revoked in self._q(
                    "SELECT kid, alg, pub, first_cp, last_cp, revoked_from_cp FROM device_keys WHERE dev = ?", (dev,))}
        state = VerifyState(next_seq, next_cp, bytes(prev), boot, bytes(fs_key) if fs_key is not None else None)
        return DeviceRow(dev, keys, bytes(fs_k0) if fs_k0 is not None else None, state, seen, nrec, ncp)

    def stored_hash(self, dev: str, cp: int) -> bytes | None:
        rows = self._q("SELECT hash FROM checkpoints WHERE dev = ? AND cp = ?", (dev, cp))
        return bytes(rows[0][0]) if rows else None

    def save_checkpoint(self, dev: str, cp: Any, records: list[bytes], decoded: list[dict], now_ms: int) -> None:
        self._q("INSERT INTO checkpoints (dev, cp, boot, first_seq, last_seq, n, hash, message, why, wall_ms, received_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dev, cp.cp, cp.boot, cp.first, cp.last, cp.n, cp.hash, cp.message, cp.why, cp.wall, now_ms))
        if records:
            rows = []
            for i, (data, rec) in enumerate(zip(records, decoded)):
                kind, api, wall = rec.get("kind"), rec.get("api"), rec.get("wall")
                rows.append((dev, cp.first + i, cp.cp, kind if isinstance(kind, str) else None,
                             api if isinstance(api, str) else None, wall if type(wall) is int else None, data))
            try:
                with self._lock:
                    self._db.executemany("INSERT INTO records (dev, seq, cp, kind, api, wall_ms, data) "
                                         "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except sqlite3.Error as exc:
                raise StoreError(f"insert records: {exc}") from None

    def save_state(self, dev: str, state: VerifyState, keys: dict[str, KeyInfo], now_ms: int,
                   added_records: int = 0, added_checkpoints: int = 0) -> None:
        self._q("UPDATE devices SET next_seq = ?, next_cp = ?, prev_cp_hash = ?, boot = ?, fs_key = ?, "
                "records = records + ?, checkpoints = checkpoints + ?, last_cp_ms = ? WHERE dev = ?",
                (state.next_seq, state.next_cp, state.prev_cp_hash, state.boot, state.fs_key,
                 added_records, added_checkpoints, now_ms, dev))
        for k in keys.values():
            self._q("INSERT INTO device_keys (dev, kid, alg, pub, first_cp, last_cp, revoked_from_cp) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dev, kid) DO UPDATE SET last_cp = excluded.last_cp",
                    (dev, k.kid, k.alg, k.public, k.first_cp, k.last_cp, k.revoked_from_cp))

    def add_pending(self, dev: str, cp: int, message: bytes, records: list[bytes], now_ms: int, limit: int) -> bool:
        if self._q("SELECT COUNT(*) FROM pending WHERE dev = ?", (dev,))[0][0] >= limit:
            return False
        self._q("INSERT INTO pending (dev, cp, message, records, received_ms) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (dev, cp) DO NOTHING", (dev, cp, message, _dumps(records), now_ms))
        return True

    def _pending(self, sql: str, args: tuple) -> list[tuple[int, bytes, list[bytes]]]:
        return [(cp, bytes(m), msgpack.unpackb(r, raw=False)) for cp, m, r in self._q(sql, args)]

    def pending_upto(self, dev: str, cp: int) -> list[tuple[int, bytes, list[bytes]]]:
        return self._pending("SELECT cp, message, records FROM pending WHERE dev = ? AND cp <= ? ORDER BY cp", (dev, cp))

    def pending_all(self, dev: str) -> list[tuple[int, bytes, list[bytes]]]:
        return self._pending("SELECT cp, message, records FROM pending WHERE dev = ? ORDER BY cp", (dev,))

    def drop_pending(self, dev: str, cp: int) -> None:
        self._q("DELETE FROM pending WHERE dev = ? AND cp = ?", (dev, cp))

    def add_bridge(self, dev: str, info: dict[str, int], now_ms: int) -> None:
        self._q("INSERT INTO bridges (dev, from_cp, to_cp, from_seq, to_seq, created_ms) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dev, from_cp) DO NOTHING",
                (dev, info["from_cp"], info["to_cp"], info["from_seq"], info["to_seq"], now_ms))

    def add_alert(self, alert: Alert, now_ms: int) -> None:
        self._q("INSERT INTO alerts (dev, kind, severity, dedupe, first_ms, last_ms, cp, seq_first, seq_last, detail, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dev, kind, dedupe) "
                "DO UPDATE SET count = alerts.count + 1, last_ms = excluded.last_ms",
                (alert.dev, alert.kind, alert.severity, alert.dedupe, now_ms, now_ms, alert.cp, alert.seq_first,
                 alert.seq_last, json.dumps(alert.detail, default=str), alert.evidence))

    def bump(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            if n:
                self._q("INSERT INTO counters (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value", (name, n))

    def touch(self, dev: str, now_ms: int, status: dict | None = None) -> None:
        if status is None:
            self._q("UPDATE devices SET last_seen_ms = ? WHERE dev = ?", (now_ms, dev))
        else:
            self._q("UPDATE devices SET last_seen_ms = ?, status = ?, status_ms = ? WHERE dev = ?",
                    (now_ms, json.dumps(status, default=str), now_ms, dev))

    # --- reads ----------------------------------------------------------------------
    def _device_dict(self, row: tuple) -> dict[str, Any]:
        d = dict(zip([c.strip() for c in _DEVICE_COLS.split(",")], row))
        d["status"] = json.loads(d["status"]) if d["status"] else None
        return d

    def devices(self) -> list[dict[str, Any]]:
        return [self._device_dict(r) for r in self._q(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY dev")]

    def device(self, dev: str) -> dict[str, Any] | None:
        rows = self._q(f"SELECT {_DEVICE_COLS} FROM devices WHERE dev = ?", (dev,))
        if not rows:
            return None
        d = self._device_dict(rows[0])
        d["keys"] = [dict(zip(("kid", "alg", "first_cp", "last_cp", "revoked_from_cp"), r)) for r in self._q(
            "SELECT kid, alg, first_cp, last_cp, revoked_from_cp FROM device_keys WHERE dev = ? ORDER BY first_cp", (dev,))]
        d["pending_checkpoints"] = self._q("SELECT COUNT(*) FROM pending WHERE dev = ?", (dev,))[0][0]
        d["bridges"] = [dict(zip(("from_cp", "to_cp", "from_seq", "to_seq", "created_ms"), r)) for r in self._q(
            "SELECT from_cp, to_cp, from_seq, to_seq, created_ms FROM bridges WHERE dev = ? ORDER BY from_cp", (dev,))]
        last = self._q("SELECT cp, hash FROM checkpoints WHERE dev = ? ORDER BY cp DESC LIMIT 1", (dev,))
        d["last_checkpoint"] = {"cp": last[0][0], "hash": bytes(last[0][1]).hex()} if last else None
        return d

    def records(self, dev: str, first: int, last: int, limit: int) -> list[tuple[int, int, bytes]]:
        return [(s, c, bytes(d)) for s, c, d in self._q(
            "SELECT seq, cp, data FROM records WHERE dev = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
            (dev, first, last, limit))]

    def alerts(self, dev: str | None, limit: int) -> list[dict[str, Any]]:
        cols = ("id", "dev", "kind", "severity", "first_ms", "last_ms", "count", "cp", "seq_first", "seq_last", "detail")
        sql = f"SELECT {', '.join(cols)} FROM alerts" + (" WHERE dev = ?" if dev else "") + " ORDER BY id DESC LIMIT ?"
        out = []
        for r in self._q(sql, (dev, limit) if dev else (limit,)):
            a = dict(zip(cols, r))
            a["detail"] = json.loads(a["detail"])
            out.append(a)
        return out

    def counters(self) -> dict[str, int]:
        return dict(self._q("SELECT name, value FROM counters ORDER BY name"))

    def oldest_pending(self) -> list[tuple[str, int, int]]:
        """(dev, lowest pending cp, its received_ms) per device with pending checkpoints."""
        return [tuple(r) for r in self._q(
            "SELECT p.dev, p.cp, p.received_ms FROM pending p JOIN "
            "(SELECT dev, MIN(cp) AS cp FROM pending GROUP BY dev) m ON p.dev = m.dev AND p.cp = m.cp")]

    def silent(self, before_ms: int) -> list[tuple[str, int]]:
        return [tuple(r) for r in self._q(
            "SELECT dev, last_seen_ms FROM devices WHERE last_seen_ms IS NOT NULL AND last_seen_ms < ?", (before_ms,))]
