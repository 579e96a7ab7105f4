"""The collector's store: registry, per-device verification state, records, alerts, counters.

One interface (``Store``), one schema (``migrations/NNNN_*.sql``, written in the SQL that SQLite and
PostgreSQL share: ``ON CONFLICT``, ``BIGINT``, no SQLite-only functions). SQLite is the
default (one file, WAL); a PostgreSQL implementation follows the same methods, taking
``SELECT ... FOR UPDATE`` on the device row where SQLite takes ``BEGIN IMMEDIATE``.

Every verification step for a device runs inside ``transaction()``: load the state,
verify, write records/checkpoints/state, commit. Any worker may get any batch (shared
subscription), so this is where per-device order is enforced.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from agent.core.export import Trust
from agent.core.verify import KeyInfo, VerifyState

__all__ = ["Alert", "DeviceRow", "Store", "open_store"]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    dev: str
    keys: dict[str, KeyInfo]
    fs_k0: bytes | None
    state: VerifyState
    last_seen_ms: int | None
    records: int
    checkpoints: int


@dataclass(frozen=True, slots=True)
class Alert:
    """A finding linked to its evidence: the checkpoint and seq range it is about."""

    dev: str
    kind: str            # verdict_alert, verdict_block, device_alert, bad_signature, fork, gap, replay, ...
    severity: str        # info, warning, high, critical
    dedupe: str          # same (dev, kind, dedupe) is one alert with a count
    detail: dict[str, Any]
    cp: int | None = None
    seq_first: int | None = None
    seq_last: int | None = None
    evidence: bytes | None = None  # e.g. the offending checkpoint message


class Store(Protocol):
    # registry
    def enroll(self, trust: Trust, now_ms: int, *, replace: bool = False) -> None: ...
    def revoke(self, kid: str, from_cp: int, now_ms: int, dev: str | None = None) -> list[str]: ...
    def device_ids(self) -> set[str]: ...
    # inside transaction()
    def transaction(self) -> AbstractContextManager[None]: ...
    def load_device(self, dev: str) -> DeviceRow | None: ...
    def stored_hash(self, dev: str, cp: int) -> bytes | None: ...
    def save_checkpoint(self, dev: str, cp: Any, records: list[bytes], decoded: list[dict], now_ms: int) -> None: ...
    def save_state(self, dev: str, state: VerifyState, keys: dict[str, KeyInfo], now_ms: int,
                   added_records: int = 0, added_checkpoints: int = 0) -> None: ...
    def add_pending(self, dev: str, cp: int, message: bytes, records: list[bytes], now_ms: int, limit: int) -> bool: ...
    def pending_upto(self, dev: str, cp: int) -> list[tuple[int, bytes, list[bytes]]]: ...
    def pending_all(self, dev: str) -> list[tuple[int, bytes, list[bytes]]]: ...
    def drop_pending(self, dev: str, cp: int) -> None: ...
    def add_bridge(self, dev: str, info: dict[str, int], now_ms: int) -> None: ...
    def add_alert(self, alert: Alert, now_ms: int) -> None: ...
    def bump(self, counts: dict[str, int]) -> None: ...
    def touch(self, dev: str, now_ms: int, status: dict | None = None) -> None: ...
    # reads (API, housekeeping)
    def devices(self) -> list[dict[str, Any]]: ...
    def device(self, dev: str) -> dict[str, Any] | None: ...
    def records(self, dev: str, first: int, last: int, limit: int) -> list[tuple[int, int, bytes]]: ...
    def alerts(self, dev: str | None, limit: int) -> list[dict[str, Any]]: ...
    def counters(self) -> dict[str, int]: ...
    def oldest_pending(self) -> list[tuple[str, int, int]]: ...
    def silent(self, before_ms: int) -> list[tuple[str, int]]: ...
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """``sqlite:///path`` or a plain path; ``postgresql://`` is not implemented yet."""
    from ..errors import ConfigError
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("store", url.split("@")[-1], "PostgreSQL store is not implemented yet; use SQLite")
    from .sqlite import SQLiteStore
    return SQLiteStore(url.removeprefix("sqlite://"))
