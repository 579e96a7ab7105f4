"""Checking an evidence bundle offline (`veritrail verify-evidence`, the dashboard's "verify
again"). Pure: bytes and trust anchors in, a list of steps out, never an exception.

Trust comes from outside the bundle: the device keys (an enrollment file or a bare public
key), optionally K_0 (forward-secure tags), the log's verifier key and witness keys. What
the bundle itself carries (its keys) is used only to say what could be checked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from . import merkle, tlog
from .checkpoint import Checkpoint, parse
from .errors import CheckpointMalformed, LogFormatError, RecordMalformed, VerifyError
from .evidence import Bundle, DeviceEvidence, decode
from .keys import ALGS, fs_key_at, fs_tag, key_id
from .note import LogCheckpoint, Note, Verifier, matching, open_checkpoint, parse_vkey, verify_signature
from .record import BOOT, SEQ, leaf_hash
from .record import decode as decode_record
from .verify import KeyInfo, check_signature

__all__ = ["Anchor", "Report", "Step", "Trust", "verify_bundle"]


@dataclass(frozen=True, slots=True)
class Anchor:
    """A device key trusted from outside the bundle. ``dev`` None: not bound to a device id."""

    kid: str
    alg: str
    public: bytes
    dev: str | None
    source: str                      # "enrollment file", "--pub", "collector registry"
    first_cp: int = 0
    last_cp: int | None = None
    revoked_from_cp: int | None = None


@dataclass(frozen=True, slots=True)
class Trust:
    keys: tuple[Anchor, ...] = ()
    fs_k0: dict[str, bytes] = field(default_factory=dict)     # dev -> K_0
    log_key: Verifier | None = None
    witnesses: tuple[Verifier, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    proves: list[str] = field(default_factory=list)
    does_not_prove: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.steps.append(Step(name, ok, detail))
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": [s.as_dict() for s in self.steps], "proves": self.proves,
                "does_not_prove": self.does_not_prove}


def _log_step(report: Report, bundle: Bundle, trust: Trust) -> tuple[LogCheckpoint | None, bool]:
    """The log's signed checkpoint and its cosignatures. Returns (checkpoint, key pinned)."""
    if bundle.log is None:
        report.add("collector log checkpoint", False, "the bundle holds no signed log checkpoint")
        return None, False
    try:
        key = parse_vkey(bundle.log.vkey)
        cp, note = open_checkpoint(bundle.log.checkpoint, key)
    except LogFormatError as exc:
        report.add("collector log checkpoint", False, str(exc))
        return None, False
    pinned_key = trust.log_key
    pinned = pinned_key is not None
    if pinned_key is not None and pinned_key != key:
        report.add("collector log checkpoint", False,
                   f"signed by {key.vkey()}, not by the trusted log key {pinned_key.vkey()}")
        return None, True
    report.add("collector log checkpoint", True,
               f"{cp.origin}: tree size {cp.size}, root {cp.root.hex()[:16]}…, signature verifies with "
               + ("the trusted log key" if pinned else "the key in the bundle (not pinned: pass --log-key)"))
    _witness_step(report, bundle.log.witnesses, note, key, trust)
    return cp, pinned


def _witness_step(report: Report, witnesses: tuple[str, ...], note: Note, log_key: Verifier, trust: Trust) -> None:
    listed: list[Verifier] = []
    try:
        listed = [parse_vkey(w) for w in witnesses]
    except LogFormatError as exc:
        report.add("witness cosignatures", False, str(exc))
        return
    known = [log_key, *listed]
    unknown = [s for s in note.signatures if not any(s.name == k.name and s.key_id == k.id for k in known)]
    if unknown:
        report.add("witness cosignatures", False, f"{len(unknown)} signature line(s) by keys the bundle does not name")
        return
    good = []
    for w in listed:
        sigs = matching(note, w)
        if not sigs or not all(verify_signature(note, s, w) for s in sigs):
            report.add("witness cosignatures", False, f"cosignature of {w.name} missing or does not verify")
            return
        good.append(w)
    missing = [w.name for w in trust.witnesses if w not in good]
    if missing:
        report.add("witness cosignatures", False, f"no valid cosignature by trusted witness(es) {', '.join(missing)}")
        return
    if good or trust.witnesses:
        report.add("witness cosignatures", True, ", ".join(
            f"{w.name} ({'trusted' if w in trust.witnesses else 'key from the bundle'})" for w in good))


def _resolve_keys(report: Report, d: DeviceEvidence, trust: Trust) -> dict[str, KeyInfo]:
    """Device keys we may trust: anchors, then keys named by a rotation signed by a trusted key."""
    anchors = {a.kid: a for a in trust.keys if a.dev in (None, d.dev)}
    keys: dict[str, KeyInfo] = {}
    problems = []
    for k in d.keys:
        if k.alg not in ALGS or key_id(k.pub) != k.kid:
            problems.append(f"key {k.kid[:16]!r}: id or algorithm does not match its public key")
    for k in d.keys:
        a = anchors.get(k.kid)
        if a is not None:
            if (a.alg, a.public) != (k.alg, k.pub):
                problems.append(f"key {k.kid}: differs from the trusted key with that id")
                continue
            keys[k.kid] = KeyInfo(k.kid, k.alg, k.pub, a.first_cp, a.last_cp, a.revoked_from_cp)
    # every rotation must verify against the bundle's own copy of the signing key (integrity),
    # and passes trust on only from a trusted key
    by_kid = {k.kid: k for k in d.keys}
    rotations: dict[str, Checkpoint] = {}
    for k in d.keys:
        if k.rotation is None:
            continue
        try:
            rot = parse(k.rotation)
            signer = by_kid.get(rot.kid)
            if signer is None:
                raise CheckpointMalformed(f"signed by {rot.kid}, a key the bundle does not hold")
            check_signature(rot, {rot.kid: KeyInfo(signer.kid, signer.alg, signer.pub)})
        except (CheckpointMalformed, VerifyError) as exc:
            problems.append(f"key {k.kid}: rotation checkpoint: {exc}")
            continue
        nk = rot.next_key
        if rot.dev != d.dev or nk is None or (nk.kid, nk.alg, nk.public) != (k.kid, k.alg, k.pub):
            problems.append(f"key {k.kid}: the rotation checkpoint does not name this key for {d.dev}")
            continue
        rotations[k.kid] = rot
    progress = True
    while progress:
        progress = False
        for kid, rot in rotations.items():
            if kid in keys or rot.kid not in keys:
                continue
            old = keys[rot.kid]
            keys[rot.kid] = KeyInfo(old.kid, old.alg, old.public, old.first_cp,
                                    rot.cp if old.last_cp is None else min(old.last_cp, rot.cp), old.revoked_from_cp)
            new = by_kid[kid]
            keys[kid] = KeyInfo(kid, new.alg, new.pub, rot.cp + 1)
            progress = True
    untrusted = [k.kid for k in d.keys if k.kid not in keys]
    detail = (f"trusted {', '.join(sorted(keys)) or 'none'}"
              + (f"; not trusted {', '.join(untrusted)}" if untrusted else ""))
    report.add(f"device {d.dev}: keys", not problems and bool(keys), "; ".join(problems) or detail)
    return keys


def _checkpoint_steps(report: Report, d: DeviceEvidence, keys: dict[str, KeyInfo], trust: Trust,
                      log_cp: LogCheckpoint | None) -> list[Checkpoint]:
    out = []
    prev_cp = -1
    for c in d.checkpoints:
        try:
            cp = parse(c.cose)
        except CheckpointMalformed as exc:
            report.add(f"device {d.dev}: checkpoint", False, str(exc))
            continue
        name = f"device {d.dev}: checkpoint {cp.cp}"
        if cp.dev != d.dev:
            report.add(name, False, f"signed for device {cp.dev!r}")
            continue
        if cp.cp <= prev_cp:
            report.add(name, False, "checkpoints are not in increasing order")
        prev_cp = cp.cp
        try:
            info = check_signature(cp, keys)
        except VerifyError as exc:
            report.add(f"{name} signature", False, str(exc))
            continue
        fs = ""
        k0 = trust.fs_k0.get(d.dev)
        if k0 is not None:
            if fs_tag(fs_key_at(k0, cp.cp), cp.unsigned_payload) != cp.fs:
                report.add(f"{name} signature", False, "signature verifies but the forward-secure tag does not match K_0")
                continue
            fs = "; forward-secure tag matches K_0"
        report.add(f"{name} signature", True, f"seq {cp.first}..{cp.last} (root {cp.root.hex()[:16]}…), "
                                              f"signed by {info.kid} ({info.alg}){fs}")
        _record_step(report, name, cp, c.records)
        _log_inclusion_step(report, name, d.dev, cp, c.log, log_cp)
        out.append(cp)
    return out


def _record_step(report: Report, name: str, cp: Checkpoint, records: Any) -> None:
    bad = []
    for r in records:
        index = r.seq - cp.first
        if not 0 <= index < cp.n:
            bad.append(f"seq {r.seq} is outside the checkpoint")
            continue
        if not merkle.verify_inclusion(leaf_hash(r.data), index, cp.n, list(r.proof), cp.root):
            bad.append(f"seq {r.seq}: inclusion proof does not lead to the signed root")
            continue
        try:
            rec = decode_record(r.data)
        except RecordMalformed as exc:
            bad.append(f"seq {r.seq}: {exc}")
            continue
        if rec.get(SEQ) != r.seq or rec.get(BOOT) != cp.boot:
            bad.append(f"seq {r.seq}: the record says seq {rec.get(SEQ)!r}, boot {rec.get(BOOT)!r}")
    seqs = [r.seq for r in records]
    if seqs != sorted(set(seqs)):
        bad.append("records are not in increasing seq order")
    if not records:
        bad.append("no evidence records")
    report.add(f"{name} records", not bad, "; ".join(bad[:5]) if bad else
               f"{len(records)} record(s) (seq {seqs[0]}..{seqs[-1]}) proven in the signed Merkle root, byte for byte")


def _log_inclusion_step(report: Report, name: str, dev: str, cp: Checkpoint, inc: Any,
                        log_cp: LogCheckpoint | None) -> None:
    step = f"{name} in the collector's log"
    if inc is None:
        report.add(step, False, "no log inclusion proof (not yet integrated when the bundle was made)")
        return
    if log_cp is None:
        report.add(step, False, "no verified log checkpoint to check against")
        return
    try:
        entry = tlog.encode_entry(dev, cp.cp, hashlib.sha256(cp.message).digest(), inc.received_ms)
    except LogFormatError as exc:
        report.add(step, False, str(exc))
        return
    ok = tlog.verify_inclusion(tlog.leaf_hash(entry), inc.index, log_cp.size, list(inc.proof), log_cp.root)
    report.add(step, ok, f"leaf {inc.index} of {log_cp.size}, received {inc.received_ms} ms"
               if ok else f"inclusion proof for leaf {inc.index} does not lead to the log root of size {log_cp.size}")


def _coverage_step(report: Report, bundle: Bundle) -> None:
    want: dict[str, set[int]] = {}
    for r in bundle.refs:
        if r.last < r.first or r.last - r.first >= 10_000:
            report.add("records cover the refs", False, f"bad ref {r.dev} {r.first}..{r.last}")
            return
        want.setdefault(r.dev, set()).update(range(r.first, r.last + 1))
    have: dict[str, list[int]] = {}
    for d in bundle.devices:
        have.setdefault(d.dev, []).extend(r.seq for c in d.checkpoints for r in c.records)
    devs = [d.dev for d in bundle.devices]
    problems = []
    if devs != sorted(set(devs)):
        problems.append("devices are not unique and sorted")
    for dev in sorted(set(want) | set(have)):
        got = have.get(dev, [])
        if len(got) != len(set(got)):
            problems.append(f"{dev}: a record appears twice")
        if set(got) != want.get(dev, set()):
            missing = sorted(want.get(dev, set()) - set(got))
            extra = sorted(set(got) - want.get(dev, set()))
            problems.append(f"{dev}: " + (f"missing seq {missing[:5]}" if missing else f"seq {extra[:5]} not in any ref"))
    if not bundle.refs:
        problems.append("the bundle names no refs")
    report.add("records cover the refs", not problems, "; ".join(problems) or ", ".join(
        f"{r.dev} seq {r.first}..{r.last}" for r in bundle.refs))


def verify_bundle(data: bytes, trust: Trust) -> Report:
    report = Report()
    try:
        bundle = decode(data)
    except LogFormatError as exc:
        report.add("bundle format", False, str(exc))
        return report
    report.add("bundle format", True, f"veritrail-evidence/1, {len(bundle.devices)} device(s), "
               f"{sum(len(c.records) for d in bundle.devices for c in d.checkpoints)} record(s)")
    log_cp, log_pinned = _log_step(report, bundle, trust)
    _coverage_step(report, bundle)
    summaries = []
    for d in bundle.devices:
        keys = _resolve_keys(report, d, trust)
        cps = _checkpoint_steps(report, d, keys, trust, log_cp)
        if cps:
            summaries.append((d, keys, cps))
    _conclusions(report, bundle, trust, summaries, log_cp, log_pinned)
    return report


def _conclusions(report: Report, bundle: Bundle, trust: Trust, summaries: list, log_cp: LogCheckpoint | None,
                 log_pinned: bool) -> None:
    if report.ok:
        for d, keys, cps in summaries:
            sources = sorted({a.source for a in trust.keys if a.kid in keys})
            report.proves.append(
                f"device {d.dev} signed checkpoints {', '.join(str(c.cp) for c in cps)} with key(s) "
                f"{', '.join(sorted({c.kid for c in cps}))} (trusted via {', '.join(sources) or 'rotation'}); "
                "the evidence records are byte for byte what it sealed, at those seqs, in that order")
            if d.dev in trust.fs_k0:
                report.proves.append(f"device {d.dev}: the forward-secure tags match K_0, so these checkpoints were "
                                     "sealed before their epoch keys were erased (not rewritten by a later intruder)")
        if log_cp is not None:
            report.proves.append(
                f"the collector's log {log_cp.origin} holds each of these checkpoints, with the time it received it, "
                f"in its signed tree of size {log_cp.size}; a later rewrite of that history is detectable "
                "by anyone who keeps this checkpoint (veritrail log verify)")
    else:
        report.proves.append("nothing: at least one check failed (see the steps)")
    dnp = report.does_not_prove
    dnp.append("that the device recorded everything that happened: a record exists only for what the agent saw, "
               "and a compromised or switched-off device records nothing")
    dnp.append("anything about records outside the refs' seq ranges")
    dnp.append("that the times inside the records are right (device clocks can be wrong); the log's received "
               "time is the collector's statement")
    dnp.append("that the device key was not stolen, or revoked after these checkpoints: ask the collector's "
               "registry for revocations")
    if any(a.dev is None for a in trust.keys):
        dnp.append("that a key given with --pub belongs to the named device (an enrollment file binds key and device)")
    if not log_pinned:
        dnp.append("that the log key is the collector's: the key in the bundle was used (pin it with --log-key)")
    if not trust.witnesses:
        dnp.append("that the collector shows everyone the same log (no split view): no trusted witness "
                   "cosignature was required (pass --witness, or compare with veritrail log verify)")
