"""Exported streams and enrollment (trust) files, and the offline stream verifier.

Export file: a msgpack stream. The first object is the header
``{"fmt": "veritrail-export/1", "dev": str, "keys": [{"kid","alg","pub"}],
"start": {"seq","cp","prev_cp_hash","boot"} | nil}``; every further object is one
checkpoint with its records: ``[checkpoint message, [record bytes, ...]]``.
``start`` is where the export begins when earlier records were already deleted after
the collector's receipt; nil means from genesis.

Enrollment file (JSON, written by ``veritrail agent init``, secret: holds K_0):
``{"device_id", "keys": [{"kid","alg","pub": hex}], "fs_k0": hex}``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack

from .checkpoint import parse
from .errors import (
    CheckpointGap, CheckpointMalformed, ExportMalformed, Replayed, SeqGap, VerifyError,
)
from .keys import ALGS, fs_key_at, key_id
from .record import decode
from .errors import RecordMalformed
from .verify import KeyInfo, VerifyState, apply_rotation, bridge, check, check_signature, eviction_of

FORMAT = "veritrail-export/1"
MAX_ITEM_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Trust:
    device_id: str
    keys: dict[str, KeyInfo]
    fs_k0: bytes | None

    @classmethod
    def from_enrollment(cls, doc: dict[str, Any]) -> "Trust":
        try:
            keys = {}
            for k in doc["keys"]:
                pub = bytes.fromhex(k["pub"])
                if k["alg"] not in ALGS or key_id(pub) != k["kid"]:
                    raise ValueError("key id does not match its public key")
                keys[k["kid"]] = KeyInfo(k["kid"], k["alg"], pub)
            k0 = doc.get("fs_k0")
            return cls(str(doc["device_id"]), keys, bytes.fromhex(k0) if k0 else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportMalformed(f"enrollment file: {exc}") from None


def enrollment_doc(device_id: str, keys: Sequence[tuple[str, str, bytes]], fs_k0: bytes) -> dict[str, Any]:
    return {"device_id": device_id, "keys": [{"kid": k, "alg": a, "pub": p.hex()} for k, a, p in keys],
            "fs_k0": fs_k0.hex()}


def write_export(out: BinaryIO, header: dict[str, Any], items: Iterable[tuple[bytes, Sequence[bytes]]]) -> int:
    packer = msgpack.Packer(use_bin_type=True)
    out.write(packer.pack({"fmt": FORMAT, **header}))
    count = 0
    for message, records in items:
        out.write(packer.pack([message, list(records)]))
        count += 1
    return count


def read_export(data: bytes | BinaryIO) -> tuple[dict[str, Any], list[tuple[bytes, list[bytes]]]]:
    """Header and items; raises ExportMalformed (never anything else) on bad bytes."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    unpacker = msgpack.Unpacker(stream, raw=False, max_buffer_size=MAX_ITEM_BYTES, strict_map_key=True)
    try:
        header = next(unpacker)
    except StopIteration:
        raise ExportMalformed("empty file") from None
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData, RecursionError) as exc:
        raise ExportMalformed(f"header: {type(exc).__name__}") from None
    if not isinstance(header, dict) or header.get("fmt") != FORMAT or not isinstance(header.get("dev"), str):
        raise ExportMalformed(f"not a {FORMAT} header")
    items: list[tuple[bytes, list[bytes]]] = []
    try:
        for obj in unpacker:
            if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], bytes)
                    and isinstance(obj[1], list) and all(isinstance(r, bytes) for r in obj[1])):
                raise ExportMalformed(f"item {len(items)} is not [checkpoint, [records]]")
            items.append((obj[0], obj[1]))
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData, RecursionError) as exc:
        raise ExportMalformed(f"item {len(items)}: {type(exc).__name__}") from None
    return header, items


def start_state(trust: Trust, start: dict[str, Any] | None) -> VerifyState:
    if start is None:
        return VerifyState.genesis(trust.device_id, trust.fs_k0)
    try:
        cp, seq, prev, boot = int(start["cp"]), int(start["seq"]), bytes(start["prev_cp_hash"]), int(start["boot"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportMalformed(f"bad start: {exc}") from None
    if cp < 0 or seq < 0 or len(prev) != 32:
        raise ExportMalformed("bad start")
    fs = fs_key_at(trust.fs_k0, cp) if trust.fs_k0 is not None else None
    return VerifyState(seq, cp, prev, boot, fs)


@dataclass
class StreamReport:
    device_id: str
    ok: bool = True
    checkpoints: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_cp: int | None = None
    last_cp: int | None = None
    bridges: list[dict[str, int]] = field(default_factory=list)
    fs_checked: bool = True
    error: VerifyError | CheckpointMalformed | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("device_id", "ok", "checkpoints", "records", "first_seq",
                                           "last_seq", "first_cp", "last_cp", "bridges", "fs_checked")}
        if self.error is not None:
            d["error"] = {"code": getattr(self.error, "code", "malformed"), "message": str(self.error),
                          "cp": getattr(self.error, "cp", None), "seq": getattr(self.error, "seq", None)}
        return d


def _find_bridge(trust: Trust, keys: dict[str, KeyInfo], state: VerifyState,
                 items: Sequence[tuple[bytes, list[bytes]]], start: int) -> VerifyState | None:
    """Look ahead for a validly signed ``agent.evicted`` record covering the gap at ``state``."""
    for message, records in items[start:]:
        try:
            cp = parse(message)
            check_signature(cp, keys)
        except (VerifyError, CheckpointMalformed):
            continue
        for data in records:
            try:
                ev = eviction_of(decode(data))
            except RecordMalformed:  # caught in order later, with its seq
                continue
            if ev is not None:
                bridged = bridge(state, ev, trust.fs_k0)
                if bridged is not None:
                    return bridged
    return None


def verify_stream(trust: Trust, items: Sequence[tuple[bytes, list[bytes]]],
                  start: dict[str, Any] | None = None) -> StreamReport:
    """Walk checkpoints in order; stop at the first error. Never raises on bad bytes."""
    report = StreamReport(trust.device_id, fs_checked=trust.fs_k0 is not None)
    state = start_state(trust, start)
    keys = dict(trust.keys)
    seen: dict[int, bytes] = {}
    for index, (message, records) in enumerate(items):
        try:
            try:
                outcome = check(trust.device_id, keys, state, message, records, stored_hash=seen.get)
            except (CheckpointGap, SeqGap) as gap:
                bridged = _find_bridge(trust, keys, state, items, index)
                if bridged is None:
                    raise gap
                report.bridges.append({"from_seq": state.next_seq, "to_seq": bridged.next_seq - 1,
                                       "from_cp": state.next_cp, "to_cp": bridged.next_cp - 1})
                state = bridged
                outcome = check(trust.device_id, keys, state, message, records, stored_hash=seen.get)
            if outcome.kind == "duplicate":
                raise Replayed(cp=outcome.checkpoint.cp)
        except (VerifyError, CheckpointMalformed) as exc:
            report.ok = False
            report.error = exc
            return report
        cp = outcome.checkpoint
        seen[cp.cp] = cp.hash
        keys = apply_rotation(keys, outcome)
        state = outcome.state
        report.checkpoints += 1
        report.records += cp.n
        if report.first_cp is None:
            report.first_cp = cp.cp
        report.last_cp = cp.cp
        if cp.n:
            if report.first_seq is None:
                report.first_seq = cp.first
            report.last_seq = cp.last
    return report
