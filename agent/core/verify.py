"""Verification of checkpoints and their records (DESIGN §3, §6). Pure.

``check`` takes one checkpoint and its records against a device's trust anchors and
verification state and returns an ``Outcome`` or raises exactly one ``VerifyError`` (or
``CheckpointMalformed``). The collector calls it per checkpoint with state from its
store; ``verify_stream`` (offline ``veritrail verify``) walks a whole export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import merkle
from .checkpoint import Checkpoint, genesis_hash, parse
from .errors import (
    BadForwardTag, BadSignature, BootRollback, ChainBroken, CheckpointGap, CountMismatch,
    DeviceMismatch, Fork, KeyRetired, KeyRevoked, RecordBootMismatch, RecordMalformed,
    RecordSeqMismatch, RecordUndecodable, Replayed, RootMismatch, SeqGap, UnknownKey,
)
from .keys import PublicKey, fs_evolve, fs_key_at, fs_tag
from .record import API, BOOT, EXTRA, KIND, SEQ, decode, leaf_hash

EVICTED = "agent.evicted"  # api of the agent record that bridges an eviction (DESIGN §4)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A device key and the checkpoint range it may sign: [first_cp, last_cp]."""

    kid: str
    alg: str
    public: bytes
    first_cp: int = 0
    last_cp: int | None = None        # set when a rotation retires it
    revoked_from_cp: int | None = None  # set by an operator's revocation

    def verifier(self) -> PublicKey:
        return PublicKey(self.alg, self.public)


@dataclass(frozen=True, slots=True)
class VerifyState:
    """Where the verified chain of one device ends."""

    next_seq: int
    next_cp: int
    prev_cp_hash: bytes
    boot: int
    fs_key: bytes | None  # K_{next_cp}; None when the device enrolled without a K_0

    @classmethod
    def genesis(cls, device_id: str, fs_k0: bytes | None) -> "VerifyState":
        return cls(0, 0, genesis_hash(device_id), 0, fs_k0)


@dataclass(frozen=True, slots=True)
class Outcome:
    """``kind`` is ``accepted`` (state advanced) or ``duplicate`` (byte-identical resend)."""

    kind: str
    checkpoint: Checkpoint
    state: VerifyState
    records: list[dict[str, Any]] = field(default_factory=list)
    new_key: KeyInfo | None = None


def _key_for(cp: Checkpoint, keys: dict[str, KeyInfo]) -> KeyInfo:
    info = keys.get(cp.kid)
    where = {"cp": cp.cp}
    if info is None:
        raise UnknownKey(cp.kid, **where)
    if info.revoked_from_cp is not None and cp.cp >= info.revoked_from_cp:
        raise KeyRevoked(cp.kid, **where)
    if info.last_cp is not None and cp.cp > info.last_cp:
        raise KeyRetired(cp.kid, **where)
    if cp.cp < info.first_cp:
        raise KeyRetired(cp.kid, **where)
    return info


def check_signature(cp: Checkpoint, keys: dict[str, KeyInfo]) -> KeyInfo:
    info = _key_for(cp, keys)
    if cp.sign1.alg != info.alg or not info.verifier().verify(cp.sign1.signature, cp.sign1.to_be_signed()):
        raise BadSignature(cp.kid, cp=cp.cp)
    return info


def check(
    device_id: str,
    keys: dict[str, KeyInfo],
    state: VerifyState,
    message: bytes,
    records: Sequence[bytes],
    *,
    stored_hash: Callable[[int], bytes | None] = lambda cp: None,
) -> Outcome:
    cp = parse(message)
    where = {"cp": cp.cp}
    if cp.dev != device_id:
        raise DeviceMismatch(device_id, cp.dev, **where)
    if cp.cp < state.next_cp:
        known = stored_hash(cp.cp)
        if known == cp.hash:
            return Outcome("duplicate", cp, state)
        check_signature(cp, keys)  # only a validly signed message can claim a fork
        if known is None:
            raise Replayed(**where)
        raise Fork(known, cp.hash, **where)
    info = check_signature(cp, keys)
    if cp.cp > state.next_cp:
        raise CheckpointGap(state.next_cp, cp.cp, **where)
    if state.fs_key is not None and fs_tag(state.fs_key, cp.unsigned_payload) != cp.fs:
        raise BadForwardTag(**where)
    if cp.boot < state.boot:
        raise BootRollback(state.boot, cp.boot, **where)
    if cp.prev_cp != state.prev_cp_hash:
        raise ChainBroken(**where)
    if cp.first != state.next_seq:
        raise SeqGap(state.next_seq, cp.first, seq=cp.first, **where)
    if len(records) != cp.n:
        raise CountMismatch(cp.n, len(records), **where)
    decoded = []
    for i, data in enumerate(records):
        expected = cp.first + i
        try:
            rec = decode(data)
        except RecordMalformed as exc:
            raise RecordUndecodable(exc.reason, seq=expected, **where) from None
        if rec.get(SEQ) != expected:
            raise RecordSeqMismatch(expected, rec.get(SEQ), seq=expected, **where)
        if rec.get(BOOT) != cp.boot:
            raise RecordBootMismatch(cp.boot, rec.get(BOOT), seq=expected, **where)
        decoded.append(rec)
    if merkle.root([leaf_hash(r) for r in records]) != cp.root:
        raise RootMismatch(**where)
    new_key = None
    if cp.next_key is not None:
        new_key = KeyInfo(cp.next_key.kid, cp.next_key.alg, cp.next_key.public, first_cp=cp.cp + 1)
    new_state = VerifyState(
        next_seq=cp.last + 1, next_cp=cp.cp + 1, prev_cp_hash=cp.hash, boot=cp.boot,
        fs_key=fs_evolve(state.fs_key) if state.fs_key is not None else None,
    )
    return Outcome("accepted", cp, new_state, decoded, new_key)


def apply_rotation(keys: dict[str, KeyInfo], outcome: Outcome) -> dict[str, KeyInfo]:
    """Keys after an accepted checkpoint: a named next key starts, the signer retires."""
    if outcome.new_key is None:
        return keys
    out = dict(keys)
    old = out[outcome.checkpoint.kid]
    out[old.kid] = replace(old, last_cp=outcome.checkpoint.cp)
    out[outcome.new_key.kid] = outcome.new_key
    return out


def eviction_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The bridge an ``agent.evicted`` record describes, or None."""
    if record.get(KIND) != "agent" or record.get(API) != EVICTED:
        return None
    x = record.get(EXTRA)
    if not isinstance(x, dict):
        return None
    first, last, cps, h = x.get("first"), x.get("last"), x.get("cps"), x.get("last_cp_hash")
    if not (type(first) is int and type(last) is int and isinstance(cps, list) and len(cps) == 2
            and all(type(c) is int for c in cps) and isinstance(h, bytes) and len(h) == 32):
        return None
    return {"first": first, "last": last, "cps": cps, "last_cp_hash": h}


def bridge(state: VerifyState, ev: dict[str, Any], fs_k0: bytes | None) -> VerifyState | None:
    """State after an eviction that starts exactly where ``state`` ends, else None."""
    first_cp, last_cp = ev["cps"]
    if ev["first"] != state.next_seq or first_cp != state.next_cp or last_cp < first_cp or ev["last"] < ev["first"] - 1:
        return None
    fs_key = None
    if state.fs_key is not None:
        fs_key = fs_key_at(state.fs_key, last_cp + 1, from_epoch=state.next_cp)
    elif fs_k0 is not None:
        fs_key = fs_key_at(fs_k0, last_cp + 1)
    return replace(state, next_seq=ev["last"] + 1, next_cp=last_cp + 1,
                   prev_cp_hash=ev["last_cp_hash"], fs_key=fs_key)
