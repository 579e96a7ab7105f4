"""The collector's append-only log of accepted device checkpoints (DESIGN §6.1).

Ingest only queues: ``verify._Device.accept`` calls ``store.tlog_queue`` in the same
transaction that stores the checkpoint (one small INSERT), so accepting stays as fast as it
was and nothing accepted can be missing from the log. ``LogIntegrator.run`` (a thread of
``veritrail collector run``) takes the queue in batches of up to ``max_batch`` leaves, appends
them to the stored tiles, signs a new checkpoint and commits, all in one transaction.

The log's note key is derived from the collector's key file (no second file to keep):
``seed = HMAC-SHA256(collector private key, "veritrail/v1/tlog-note-key")``, an Ed25519 key
whatever the collector key's algorithm; its name (the checkpoint origin) is
``veritrail/collector/<collector key id>``. ``log_signer`` computes both.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

from agent.core import tlog
from agent.core.keys import Ed25519Signer
from agent.core.note import LogCheckpoint, NoteSigner, sign_note

from ..errors import StoreError
from ..store import Store

log = logging.getLogger("veritrail.collector.tlog")
NOTE_KEY_LABEL = b"veritrail/v1/tlog-note-key"
MAX_BATCH = 10_000


def log_signer(collector_signer) -> NoteSigner:
    """The log's note signer, derived from the collector's signing key."""
    seed = hmac.digest(collector_signer.private_bytes(), NOTE_KEY_LABEL, "sha256")
    return NoteSigner(f"veritrail/collector/{collector_signer.kid}", Ed25519Signer(seed))


class _Tiles:
    """The tiles one integration reads and changes: read once, written back together."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache: dict[tuple[int, int], bytearray] = {}
        self.dirty: set[tuple[int, int]] = set()

    def get(self, level: int, idx: int) -> bytearray:
        key = (level, idx)
        t = self.cache.get(key)
        if t is None:
            t = bytearray(self.store.tlog_tile(level, idx) or b"")
            self.cache[key] = t
        return t

    def push(self, level: int, count: int, h: bytes) -> None:
        """Append hash ``h`` as number ``count`` (0-based) of ``level``; a tile that fills up
        is hashed into the level above."""
        idx = count // tlog.TILE_WIDTH
        t = self.get(level, idx)
        if len(t) != (count % tlog.TILE_WIDTH) * tlog.HASH_BYTES:
            raise StoreError(f"tile {level}/{idx} has {len(t) // 32} hashes, expected {count % tlog.TILE_WIDTH}")
        t += h
        self.dirty.add((level, idx))

    def changed(self) -> dict[tuple[int, int], bytes]:
        return {k: bytes(self.cache[k]) for k in sorted(self.dirty)}


def append_leaves(tiles: _Tiles, size: int, leaf_hashes: list[bytes]) -> int:
    """Add leaves to a tree of ``size`` held in ``tiles``; returns the new size."""
    for h in leaf_hashes:
        level, count, node = 0, size, h
        while True:
            tiles.push(level, count, node)
            count += 1
            if count % tlog.TILE_WIDTH:
                break
            full = tiles.get(level, count // tlog.TILE_WIDTH - 1)
            node = tlog.perfect_hash([bytes(full[i:i + 32]) for i in range(0, len(full), 32)])
            level += 1
            count = count // tlog.TILE_WIDTH - 1
        size += 1
    return size


def store_node(store: Store) -> tlog.Node:
    """``node(level, index)`` over the stored tiles, each tile read at most once per call site."""
    cache: dict[tuple[int, int], bytes] = {}

    def get(level: int, idx: int) -> bytes:
        if (level, idx) not in cache:
            cache[(level, idx)] = store.tlog_tile(level, idx) or b""
        return cache[(level, idx)]
    return tlog.tile_node(get)


class TransparencyLog:
    def __init__(self, store: Store, signer: NoteSigner, *, clock: Callable[[], float] = time.time,
                 max_batch: int = MAX_BATCH) -> None:
        self.store, self.signer, self.clock, self.max_batch = store, signer, clock, max_batch
        self.origin = signer.name
        self.vkey = signer.verifier.vkey()

    def integrate(self) -> int:
        """One batch: queued checkpoints become leaves, and a new checkpoint is signed."""
        with self.store.transaction():
            size = self.store.tlog_begin(self.origin, self.vkey)
            rows = self.store.tlog_queued(self.max_batch)
            if not rows:
                return 0
            tiles = _Tiles(self.store)
            hashes = [tlog.leaf_hash(tlog.encode_entry(dev, cp, h, received)) for _, dev, cp, h, received in rows]
            new_size = append_leaves(tiles, size, hashes)
            root = tlog.root(new_size, tlog.tile_node(lambda level, idx: bytes(tiles.get(level, idx))))
            note = sign_note(LogCheckpoint(self.origin, new_size, root).text(), [self.signer])
            self.store.tlog_append(size, rows, tiles.changed())
            self.store.tlog_set_head(new_size, root, note, int(self.clock() * 1000))
            self.store.bump({"tlog.leaves": len(rows), "tlog.checkpoints": 1})
        return len(rows)

    def integrate_all(self) -> int:
        total = 0
        while True:
            n = self.integrate()
            total += n
            if n < self.max_batch:
                return total


class LogIntegrator:
    """The background owner of integration: every ``interval_s``, everything queued."""

    def __init__(self, log_: TransparencyLog, *, interval_s: float = 1.0) -> None:
        self.log, self.interval_s = log_, interval_s
        self.errors = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                n = self.log.integrate_all()
                if n:
                    log.debug("log integrated %d checkpoints", n)
            except StoreError as exc:
                self.errors += 1
                log.error("log integration: %s", exc.reason)
                try:  # counted where operators look (/api/metrics), if the store still answers
                    with self.log.store.transaction():
                        self.log.store.bump({"tlog.integration_errors": 1})
                except StoreError as again:
                    log.error("log integration error not counted: %s", again.reason)
            stop.wait(self.interval_s)
