"""Evidence bundles built from the store (format: agent/core/evidence.py, docs/evidence.md).

``build(store, refs)`` reads, per ref ``{dev, first, last}``, only what the bundle needs, each
through an index: the checkpoints holding the first and last record (records by (dev, seq)),
those checkpoints (by (dev, cp)), the records of each of them (a (dev, seq) range of at most
one checkpoint) for the Merkle proofs, each checkpoint's log leaf (by (dev, cp)) and the log
tiles its inclusion proof needs. Nothing scans a table.

``alert_refs`` is the one place that knows where an alert keeps its evidence refs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from agent.core import evidence as fmt
from agent.core import merkle, tlog
from agent.core.evidence_verify import Anchor, Report, Trust, verify_bundle
from agent.core.note import parse_vkey
from agent.core.record import leaf_hash

from .errors import CollectorError
from .store import Store
from .tlog import store_node


class EvidenceUnavailable(CollectorError):
    """A bundle cannot be built: unknown alert, no record range, records not stored, too large."""

    def __init__(self, reason: str, status: int = 404) -> None:
        super().__init__(f"evidence: {reason}")
        self.reason, self.status = reason, status


def alert_refs(store: Store, alert_id: int) -> list[dict[str, Any]]:
    """The alert's evidence refs. Today from the base alerts table's (dev, seq_first, seq_last);
    when the operator API's alerts carry ``evidence`` (a list of refs), read that here instead."""
    refs = store.alert_evidence_refs(alert_id)
    if refs is None:
        raise EvidenceUnavailable(f"no alert {alert_id}")
    if not refs:
        raise EvidenceUnavailable(f"alert {alert_id} names no records", 422)
    return refs


def _refs(raw: Sequence[dict[str, Any]]) -> list[fmt.Ref]:
    out, total = [], 0
    for r in raw:
        try:
            ref = fmt.Ref(str(r["dev"]), int(r["first"]), int(r["last"]))
        except (KeyError, TypeError, ValueError):
            raise EvidenceUnavailable(f"bad evidence ref {r!r:.80}", 422) from None
        if ref.first < 0 or ref.last < ref.first:
            raise EvidenceUnavailable(f"bad evidence ref {ref.dev} {ref.first}..{ref.last}", 422)
        total += ref.last - ref.first + 1
        out.append(ref)
    if total > fmt.MAX_RECORDS or len(out) > fmt.MAX_REFS:
        raise EvidenceUnavailable(f"{total} records in {len(out)} refs: more than a bundle holds "
                                  f"({fmt.MAX_RECORDS} records, {fmt.MAX_REFS} refs)", 413)
    return out


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _keys(store: Store, dev: str) -> tuple[fmt.KeyEvidence, ...]:
    out = []
    for kid, alg, pub, first_cp, _, _ in store.device_keys(dev):
        rotation = store.checkpoint_message(dev, first_cp - 1) if first_cp > 0 else None
        out.append(fmt.KeyEvidence(kid, alg, pub, rotation))
    return tuple(out)


def _device(store: Store, dev: str, ranges: list[tuple[int, int]], log_size: int,
            node: tlog.Node) -> fmt.DeviceEvidence:
    lo, hi = ranges[0][0], ranges[-1][1]
    first_cp, last_cp = store.record_cp(dev, lo), store.record_cp(dev, hi)
    if first_cp is None or last_cp is None:
        raise EvidenceUnavailable(f"records {lo}..{hi} of {dev} are not stored")
    checkpoints = []
    for cp_no, first, last, message in store.iter_checkpoints(dev, first_cp, last_cp):
        wanted = [s for a, b in ranges for s in range(max(a, first), min(b, last) + 1)]
        if not wanted:
            continue
        stored = store.record_bytes(dev, first, last)
        if [s for s, _ in stored] != list(range(first, last + 1)):
            raise EvidenceUnavailable(f"records of checkpoint {cp_no} of {dev} are incomplete in the store", 500)
        leaves = [leaf_hash(data) for _, data in stored]
        proofs = merkle.inclusion_proofs(leaves, [s - first for s in wanted])
        records = tuple(fmt.RecordEvidence(s, stored[s - first][1], tuple(p)) for s, p in zip(wanted, proofs))
        inclusion = None
        leaf = store.tlog_leaf_of(dev, cp_no, hashlib.sha256(message).digest())
        if leaf is not None and leaf[0] < log_size:
            inclusion = fmt.LogInclusion(leaf[0], leaf[1], tuple(tlog.inclusion_proof(leaf[0], log_size, node)))
        checkpoints.append(fmt.CheckpointEvidence(message, inclusion, records))
    return fmt.DeviceEvidence(dev, _keys(store, dev), tuple(checkpoints))


def build(store: Store, raw_refs: Sequence[dict[str, Any]]) -> fmt.Bundle:
    """The bundle for these refs, with the log's latest signed checkpoint (and cosignatures)."""
    refs = _refs(raw_refs)
    head = store.tlog_head()
    identity = store.tlog_identity()
    log = None
    size = 0
    if head is not None and identity is not None:
        size, _, note = head
        cosigs = store.tlog_cosigs(size)
        log = fmt.LogEvidence(identity[1], note + "".join(line for _, line in cosigs),
                              tuple(sorted({w for w, _ in cosigs})))
    node = store_node(store)
    by_dev: dict[str, list[tuple[int, int]]] = {}
    for r in refs:
        by_dev.setdefault(r.dev, []).append((r.first, r.last))
    devices = tuple(_device(store, dev, _merged(by_dev[dev]), size, node) for dev in sorted(by_dev))
    return fmt.Bundle(tuple(refs), devices, log)


def registry_trust(store: Store, devs: Sequence[str]) -> Trust:
    """Trust as the collector knows it: enrolled and rotated keys with their ranges and
    revocations, K_0, and the log's own key. For the server-side "verify again"."""
    anchors = []
    k0 = {}
    for dev in devs:
        for kid, alg, pub, first_cp, last_cp, revoked in store.device_keys(dev):
            anchors.append(Anchor(kid, alg, pub, dev, "collector registry", first_cp, last_cp, revoked))
        row = store.load_device(dev)
        if row is not None and row.fs_k0 is not None:
            k0[dev] = row.fs_k0
    identity = store.tlog_identity()
    return Trust(tuple(anchors), k0, parse_vkey(identity[1]) if identity else None)


def verify_again(store: Store, data: bytes) -> Report:
    """Check a bundle (as built for an alert) with the trust the registry holds."""
    try:
        devs = sorted({d.dev for d in fmt.decode(data).devices})
    except fmt.EvidenceMalformed:
        devs = []
    return verify_bundle(data, registry_trust(store, devs))


__all__ = ["EvidenceUnavailable", "alert_refs", "build", "registry_trust", "verify_again"]
