"""An auditor's view of the collector's log: follow it, prove it append-only, catch rewrites.

``Auditor.check()`` fetches ``<url>/checkpoint``, verifies the log's signature, and compares it
with the checkpoint saved in the state directory by the previous run:

    smaller than before              -> "rolled back": history was rewritten (sizes given)
    same size, other root            -> "forked": a split view (both signed notes kept)
    larger, no valid consistency     -> "rewritten": the new tree does not extend the old
    proof from the tiles

It computes the consistency proof itself from the log's tiles (for the new tree size), then
checks that the new entries hash to the level-0 tiles (``full=True``: every entry from 0,
which also catches entries edited in place). Conflicting signed checkpoints are kept in
``DIR/conflicts/`` as proof for third parties. Only stdlib HTTP (urllib): no collector deps.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core import tlog
from agent.core.errors import LogFormatError
from agent.core.note import LogCheckpoint, Verifier, open_checkpoint, parse_vkey

MAX_NOTE_BYTES = 64 * 1024
MAX_BUNDLE_BYTES = tlog.TILE_WIDTH * (2 + tlog.MAX_ENTRY_BYTES)


class FetchError(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class Fetcher:
    """GET with a size limit, a timeout and an optional bearer token."""

    def __init__(self, base: str, token: str | None = None, timeout_s: float = 20.0) -> None:
        self.base, self.token, self.timeout_s = base.rstrip("/"), token, timeout_s

    def get(self, path: str, limit: int) -> bytes:
        url = f"{self.base}/{path}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise FetchError(url, f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FetchError(url, str(getattr(exc, "reason", exc))) from None
        if len(data) > limit:
            raise FetchError(url, f"more than {limit} bytes")
        return data


def remote_node(fetch: Fetcher, size: int) -> tlog.Node:
    """node(level, index) from the log's tiles, asking for the width the tree of ``size`` has."""
    cache: dict[tuple[int, int], bytes] = {}

    def get(level: int, idx: int) -> bytes:
        if (level, idx) not in cache:
            width = tlog.tile_width(level, idx, size)
            if width == 0:
                raise FetchError(f"tile {level}/{idx}", f"not part of a tree of size {size}")
            data = fetch.get(tlog.tile_path(level, idx, width), width * tlog.HASH_BYTES)
            tlog.split_tile(data, width)
            cache[(level, idx)] = data
        return cache[(level, idx)]
    return tlog.tile_node(get)


@dataclass
class AuditResult:
    ok: bool
    status: str                    # first, unchanged, extended, rolled_back, forked, rewritten, bad_entries
    detail: str
    old_size: int | None = None
    new_size: int | None = None
    checked_entries: int = 0
    included: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Auditor:
    def __init__(self, fetch: Fetcher, state_dir: str | os.PathLike, log_key: Verifier | None = None) -> None:
        self.fetch, self.dir = fetch, Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = self._load()
        if log_key is None and saved is None:
            raise ValueError("first run: give the log's verifier key (--log-key; `veritrail log key` prints it)")
        if log_key is not None and saved is not None and saved["vkey"] != log_key.vkey():
            raise ValueError(f"the state in {self.dir} follows another log key ({saved['vkey']})")
        self.key = log_key or parse_vkey(saved["vkey"])  # type: ignore[index]

    def _load(self) -> dict[str, Any] | None:
        p = self.dir / "state.json"
        return json.loads(p.read_text()) if p.exists() else None

    def _save(self, note: str, cp: LogCheckpoint) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps({"vkey": self.key.vkey(), "size": cp.size, "root": cp.root.hex(), "note": note}))
        os.replace(tmp, self.dir / "state.json")
        with open(self.dir / "history.jsonl", "a") as h:
            h.write(json.dumps({"size": cp.size, "root": cp.root.hex(), "seen_ms": int(time.time() * 1000)}) + "\n")

    def _conflict(self, status: str, old_note: str, new_note: str) -> str:
        d = self.dir / "conflicts"
        d.mkdir(exist_ok=True)
        p = d / f"{int(time.time() * 1000)}-{status}.txt"
        p.write_text(f"# saved before\n{old_note}\n# served now\n{new_note}")
        return str(p)

    def _entries(self, start: int, end: int, size: int, node: tlog.Node) -> str | None:
        """Entry bundles [start, end) decode and hash to the level-0 tiles; a problem, or None."""
        for b in range(start // tlog.TILE_WIDTH, (end + tlog.TILE_WIDTH - 1) // tlog.TILE_WIDTH):
            width = tlog.tile_width(0, b, size)
            entries = tlog.decode_bundle(self.fetch.get(tlog.tile_path("entries", b, width), MAX_BUNDLE_BYTES), width)
            for k, e in enumerate(entries):
                i = b * tlog.TILE_WIDTH + k
                if i < start or i >= end:
                    continue
                tlog.decode_entry(e)
                if tlog.leaf_hash(e) != node(0, i):
                    return f"entry {i} does not hash to leaf {i} of the tree"
        return None

    def _against_saved(self, saved: dict[str, Any], cp: LogCheckpoint, note: str,
                       node: tlog.Node) -> AuditResult | None:
        """A failed result when ``cp`` does not extend the saved checkpoint, else None."""
        old_size, old_root = int(saved["size"]), bytes.fromhex(saved["root"])
        if cp.size < old_size:
            where = self._conflict("rolled_back", saved["note"], note)
            return AuditResult(False, "rolled_back", f"the log now has {cp.size} leaves, {old_size} were seen before: "
                               f"history was rewritten or this is a stale view (both checkpoints in {where})",
                               old_size, cp.size)
        if cp.size == old_size and cp.root != old_root:
            where = self._conflict("forked", saved["note"], note)
            return AuditResult(False, "forked", f"two signed checkpoints of size {cp.size} with different roots: "
                               f"a split view (both in {where})", old_size, cp.size)
        if cp.size > old_size:
            proof = tlog.consistency_proof(old_size, cp.size, node)
            if not tlog.verify_consistency(old_size, cp.size, old_root, cp.root, proof):
                where = self._conflict("rewritten", saved["note"], note)
                return AuditResult(False, "rewritten", f"the checkpoint of size {cp.size} does not extend the one of "
                                   f"size {old_size} seen before: history was rewritten (both in {where})",
                                   old_size, cp.size)
        return None

    def check(self, *, full: bool = False, include: list[tuple[int, bytes]] | None = None) -> AuditResult:
        """One audit round. ``include``: (leaf index, entry bytes) that must be in the tree."""
        note_bytes = self.fetch.get("checkpoint", MAX_NOTE_BYTES)
        try:
            cp, _ = open_checkpoint(note_bytes, self.key)
        except LogFormatError as exc:
            return AuditResult(False, "bad_checkpoint", str(exc))
        note = note_bytes.decode()
        saved = self._load()
        old_size = None if saved is None else int(saved["size"])
        node = remote_node(self.fetch, cp.size)
        try:
            if saved is not None:
                failed = self._against_saved(saved, cp, note, node)
                if failed is not None:
                    return failed
            elif cp.size and tlog.root(cp.size, node) != cp.root:
                return AuditResult(False, "bad_tiles", f"the tiles do not hash to the signed root of size {cp.size}",
                                   old_size, cp.size)
            start = 0 if full or old_size is None else old_size
            problem = self._entries(start, cp.size, cp.size, node) if cp.size > start else None
            if problem:
                return AuditResult(False, "bad_entries", problem + f" (tree size {cp.size})", old_size, cp.size)
            included = []
            for index, entry in include or []:
                ok = index < cp.size and tlog.verify_inclusion(
                    tlog.leaf_hash(entry), index, cp.size, tlog.inclusion_proof(index, cp.size, node), cp.root)
                included.append({"index": index, "included": ok})
            if not all(i["included"] for i in included):
                return AuditResult(False, "not_included", "a given checkpoint is not in the log", old_size, cp.size,
                                   included=included)
        except LogFormatError as exc:
            return AuditResult(False, "bad_tiles", f"the log serves malformed data: {exc}", old_size, cp.size)
        except FetchError as exc:
            return AuditResult(False, "unavailable", f"the log does not serve the data of its own checkpoint of size "
                               f"{cp.size}: {exc}", old_size, cp.size)
        status = "first" if saved is None else "unchanged" if cp.size == old_size else "extended"
        self._save(note, cp)
        return AuditResult(True, status, f"size {cp.size}, root {cp.root.hex()[:16]}…"
                           + ("" if old_size is None else f", consistent with size {old_size} seen before"),
                           old_size, cp.size, cp.size - start, included)
