"""Evidence bundles: the file format (docs/evidence.md). Pure.

A bundle is canonical JSON (sorted keys, no whitespace, ASCII) of

    {"format": "veritrail-evidence/1",
     "refs":    [{"dev", "first", "last"}],                 the seq ranges it is evidence for
     "devices": [{"dev",
                  "keys": [{"kid", "alg", "pub": b64, "rotation": b64 COSE | null}],
                  "checkpoints": [{"cose": b64 (as stored),
                                   "log": {"index", "received_ms", "proof": [b64]} | null,
                                   "records": [{"seq", "data": b64, "proof": [b64]}]}]}],
     "log": {"vkey": str, "checkpoint": signed note, "witnesses": [vkey]} | null}

Nothing in it goes unchecked: every field is signed, proven, or re-derived by the verifier,
and ``decode`` accepts only the canonical encoding, so one flipped bit anywhere fails.
``decode`` checks limits and shape and raises ``EvidenceMalformed`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from .errors import EvidenceMalformed
from .note import b64

FORMAT = "veritrail-evidence/1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_DEVICES = 256
MAX_KEYS = 64
MAX_CHECKPOINTS = 4096
MAX_RECORDS = 10_000
MAX_REFS = 256
MAX_PROOF = 63
MAX_DEV_CHARS = 128


@dataclass(frozen=True, slots=True)
class Ref:
    dev: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class RecordEvidence:
    seq: int
    data: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class LogInclusion:
    index: int
    received_ms: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CheckpointEvidence:
    cose: bytes
    log: LogInclusion | None
    records: tuple[RecordEvidence, ...]


@dataclass(frozen=True, slots=True)
class KeyEvidence:
    kid: str
    alg: str
    pub: bytes
    rotation: bytes | None     # the checkpoint (signed by the previous key) that named this key


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    dev: str
    keys: tuple[KeyEvidence, ...]
    checkpoints: tuple[CheckpointEvidence, ...]


@dataclass(frozen=True, slots=True)
class LogEvidence:
    vkey: str
    checkpoint: str
    witnesses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Bundle:
    refs: tuple[Ref, ...]
    devices: tuple[DeviceEvidence, ...]
    log: LogEvidence | None


# --- encode ------------------------------------------------------------------------

def to_json(b: Bundle) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "refs": [{"dev": r.dev, "first": r.first, "last": r.last} for r in b.refs],
        "devices": [{
            "dev": d.dev,
            "keys": [{"kid": k.kid, "alg": k.alg, "pub": b64(k.pub),
                      "rotation": None if k.rotation is None else b64(k.rotation)} for k in d.keys],
            "checkpoints": [{
                "cose": b64(c.cose),
                "log": None if c.log is None else {"index": c.log.index, "received_ms": c.log.received_ms,
                                                   "proof": [b64(p) for p in c.log.proof]},
                "records": [{"seq": r.seq, "data": b64(r.data), "proof": [b64(p) for p in r.proof]}
                            for r in c.records],
            } for c in d.checkpoints],
        } for d in b.devices],
        "log": None if b.log is None else {"vkey": b.log.vkey, "checkpoint": b.log.checkpoint,
                                           "witnesses": list(b.log.witnesses)},
    }


def encode(b: Bundle) -> bytes:
    return json.dumps(to_json(b), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# --- decode ------------------------------------------------------------------------

class _Reader:
    """Typed access to a parsed JSON object; errors name the path."""

    def __init__(self, obj: Any, path: str) -> None:
        self.obj, self.path = obj, path

    def fail(self, reason: str) -> EvidenceMalformed:
        return EvidenceMalformed(f"{self.path or 'bundle'}: {reason}")

    def fields(self, names: set[str]) -> "_Reader":
        if not isinstance(self.obj, dict):
            raise self.fail("not an object")
        if set(self.obj) != names:
            missing, extra = sorted(names - set(self.obj)), sorted(set(self.obj) - names)
            raise self.fail(f"fields {'missing ' + str(missing) if missing else ''}"
                            f"{' unexpected ' + str(extra)[:80] if extra else ''}".strip())
        return self

    def at(self, name: str) -> "_Reader":
        return _Reader(self.obj[name], f"{self.path}.{name}" if self.path else name)

    def items(self, limit: int) -> list["_Reader"]:
        if not isinstance(self.obj, list):
            raise self.fail("not a list")
        if len(self.obj) > limit:
            raise self.fail(f"{len(self.obj)} items, limit {limit}")
        return [_Reader(v, f"{self.path}[{i}]") for i, v in enumerate(self.obj)]

    def integer(self) -> int:
        if type(self.obj) is not int or not 0 <= self.obj < 1 << 63:
            raise self.fail("not an unsigned 63-bit integer")
        return self.obj

    def text(self, limit: int = 1 << 20) -> str:
        if not isinstance(self.obj, str) or not self.obj or len(self.obj) > limit:
            raise self.fail(f"not a non-empty string of at most {limit} characters")
        return self.obj

    def blob(self, limit: int = 1 << 20) -> bytes:
        s = self.text(4 * limit // 3 + 4)
        try:
            raw = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail("not base64") from None
        if b64(raw) != s:
            raise self.fail("not canonical base64")
        return raw

    def hashes(self) -> tuple[bytes, ...]:
        out = tuple(r.blob(32) for r in self.items(MAX_PROOF))
        if any(len(h) != 32 for h in out):
            raise self.fail("a proof hash is not 32 bytes")
        return out

    def nullable(self) -> bool:
        return self.obj is None


def _record(r: _Reader) -> RecordEvidence:
    r.fields({"seq", "data", "proof"})
    return RecordEvidence(r.at("seq").integer(), r.at("data").blob(64 * 1024), r.at("proof").hashes())


def _checkpoint(r: _Reader) -> CheckpointEvidence:
    r.fields({"cose", "log", "records"})
    lg = r.at("log")
    inclusion = None
    if not lg.nullable():
        lg.fields({"index", "received_ms", "proof"})
        inclusion = LogInclusion(lg.at("index").integer(), lg.at("received_ms").integer(), lg.at("proof").hashes())
    return CheckpointEvidence(r.at("cose").blob(16 * 1024), inclusion,
                              tuple(_record(x) for x in r.at("records").items(MAX_RECORDS)))


def _key(r: _Reader) -> KeyEvidence:
    r.fields({"kid", "alg", "pub", "rotation"})
    rot = r.at("rotation")
    return KeyEvidence(r.at("kid").text(64), r.at("alg").text(16), r.at("pub").blob(256),
                       None if rot.nullable() else rot.blob(16 * 1024))


def _device(r: _Reader) -> DeviceEvidence:
    r.fields({"dev", "keys", "checkpoints"})
    return DeviceEvidence(r.at("dev").text(MAX_DEV_CHARS), tuple(_key(k) for k in r.at("keys").items(MAX_KEYS)),
                          tuple(_checkpoint(c) for c in r.at("checkpoints").items(MAX_CHECKPOINTS)))


def decode(data: bytes) -> Bundle:
    if not isinstance(data, (bytes, bytearray)):
        raise EvidenceMalformed("not bytes")
    if len(data) > MAX_BUNDLE_BYTES:
        raise EvidenceMalformed(f"{len(data)} bytes, limit {MAX_BUNDLE_BYTES}")
    try:
        obj = json.loads(bytes(data).decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EvidenceMalformed(f"not ASCII JSON ({type(exc).__name__})") from None
    top = _Reader(obj, "").fields({"format", "refs", "devices", "log"})
    if top.at("format").obj != FORMAT:
        raise EvidenceMalformed(f"format is not {FORMAT!r}")
    refs = []
    for r in top.at("refs").items(MAX_REFS):
        r.fields({"dev", "first", "last"})
        refs.append(Ref(r.at("dev").text(MAX_DEV_CHARS), r.at("first").integer(), r.at("last").integer()))
    lg = top.at("log")
    log = None
    if not lg.nullable():
        lg.fields({"vkey", "checkpoint", "witnesses"})
        log = LogEvidence(lg.at("vkey").text(1024), lg.at("checkpoint").text(64 * 1024),
                          tuple(w.text(1024) for w in lg.at("witnesses").items(64)))
    devices = tuple(_device(d) for d in top.at("devices").items(MAX_DEVICES))
    if sum(len(c.records) for d in devices for c in d.checkpoints) > MAX_RECORDS:
        raise EvidenceMalformed(f"more than {MAX_RECORDS} records")
    bundle = Bundle(tuple(refs), devices, log)
    if encode(bundle) != bytes(data):
        raise EvidenceMalformed("not in canonical form (sorted keys, no whitespace, ASCII, canonical base64)")
    return bundle
