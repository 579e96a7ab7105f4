"""Checkpoints: the seal over a contiguous seq range (DESIGN §3).

A checkpoint is a COSE_Sign1 over a canonical-CBOR map with text keys:

    v, dev, boot, cp, first, last, n, root, prev_cp, kid, fs      (always)
    mono, wall, why                                                (context)
    nk = [kid, alg, public key]                                    (rotation: the next key)

``fs = HMAC-SHA256(K_cp, canonical CBOR of the map without fs)``: the forward-secure epoch
is the checkpoint number. An empty checkpoint (heartbeat) has n = 0 and last = first - 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2

from . import cose
from .errors import CheckpointMalformed, CoseMalformed
from .keys import ALGS, Signer, fs_tag

VERSION = 1
GENESIS = b"veritrail/v1/genesis"
REASONS = ("size", "timer", "security", "start", "stop", "heartbeat", "rotate", "flush")

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "v": int, "dev": str, "boot": int, "cp": int, "first": int, "last": int, "n": int,
    "root": bytes, "prev_cp": bytes, "kid": str, "fs": bytes,
}
_ORDER_SET = frozenset(_REQUIRED) | {"mono", "wall", "why", "nk"}


def genesis_hash(device_id: str) -> bytes:
    """prev_cp of a device's first checkpoint."""
    return hashlib.sha256(GENESIS + device_id.encode()).digest()


def message_hash(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


@dataclass(frozen=True, slots=True)
class NextKey:
    kid: str
    alg: str
    public: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint. ``message`` is the exact COSE bytes; ``hash`` their SHA-256."""

    message: bytes
    hash: bytes
    dev: str
    boot: int
    cp: int
    first: int
    last: int
    n: int
    root: bytes
    prev_cp: bytes
    kid: str
    fs: bytes
    sign1: cose.Sign1
    unsigned_payload: bytes  # canonical CBOR without fs: what the fs tag covers
    mono: int | None = None
    wall: int | None = None
    why: str | None = None
    next_key: NextKey | None = None


def _dumps(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def _canonical_rank(key: str) -> tuple[int, bytes]:
    encoded = cbor2.dumps(key)
    return len(encoded), encoded


# Canonical CBOR (RFC 7049 §3.9, as cbor2 does it) sorts map keys by encoded length, then
# bytes. Building the payload in that order lets plain ``dumps`` produce canonical bytes
# at half the cost; ``parse`` re-checks canonical form, so a mistake here cannot pass.
_ORDER = sorted(list(_REQUIRED) + ["mono", "wall", "why", "nk"], key=_canonical_rank)


def _ordered(payload: dict[str, Any]) -> bytes:
    if payload.keys() <= _ORDER_SET:
        return cbor2.dumps({k: payload[k] for k in _ORDER if k in payload})
    return _dumps(payload)


def seal(fields: dict[str, Any], signer: Signer, fs_key: bytes | bytearray) -> bytes:
    """Build and sign a checkpoint message from its payload fields (without kid/fs/v)."""
    payload = {"v": VERSION, **fields, "kid": signer.kid}
    unsigned = _ordered(payload)
    payload["fs"] = fs_tag(bytes(fs_key), unsigned)
    return cose.sign1(_ordered(payload), signer)


def parse(message: bytes) -> Checkpoint:
    """Parse a checkpoint without checking signature or tag; raises CheckpointMalformed."""
    try:
        s1 = cose.parse1(message)
    except CoseMalformed as exc:
        raise CheckpointMalformed(exc.reason) from None
    try:
        payload = cbor2.loads(s1.payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise CheckpointMalformed(f"payload CBOR: {type(exc).__name__}") from None
    if not isinstance(payload, dict):
        raise CheckpointMalformed("payload is not a map")
    for key, typ in _REQUIRED.items():
        value = payload.get(key)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CheckpointMalformed(f"field {key!r} missing or not {typ.__name__}")  # type: ignore[union-attr]
    if payload["v"] != VERSION:
        raise CheckpointMalformed(f"version {payload['v']}, expected {VERSION}")
    for key in ("boot", "cp", "first", "n"):
        if payload[key] < 0:
            raise CheckpointMalformed(f"field {key!r} is negative")
    if payload["last"] != payload["first"] + payload["n"] - 1:
        raise CheckpointMalformed("n does not match first..last")
    if len(payload["root"]) != 32 or len(payload["prev_cp"]) != 32 or len(payload["fs"]) != 32:
        raise CheckpointMalformed("root, prev_cp and fs must be 32 bytes")
    if payload["kid"] != s1.kid:
        raise CheckpointMalformed("kid in payload differs from the protected header")
    try:
        canonical = _dumps(payload)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # cbor2 decodes some malformed input into objects it cannot encode (a stray break
        # marker inside an optional field, found by the verifier fuzz test)
        raise CheckpointMalformed(f"payload CBOR not re-encodable: {type(exc).__name__}") from None
    if canonical != s1.payload:
        raise CheckpointMalformed("payload is not canonical CBOR")
    next_key = None
    if "nk" in payload:
        nk = payload["nk"]
        if not (isinstance(nk, list) and len(nk) == 3 and isinstance(nk[0], str)
                and nk[1] in ALGS and isinstance(nk[2], bytes)):
            raise CheckpointMalformed("bad nk (next key)")
        next_key = NextKey(nk[0], nk[1], nk[2])
    unsigned = dict(payload)
    del unsigned["fs"]
    opt = {k: payload.get(k) for k in ("mono", "wall")}
    for key, value in opt.items():
        if value is not None and (type(value) is not int or value < 0):
            raise CheckpointMalformed(f"field {key!r} must be an unsigned integer")
    why = payload.get("why")
    if why is not None and not isinstance(why, str):
        raise CheckpointMalformed("field 'why' must be a string")
    return Checkpoint(
        message=bytes(message), hash=message_hash(bytes(message)), dev=payload["dev"],
        boot=payload["boot"], cp=payload["cp"], first=payload["first"], last=payload["last"],
        n=payload["n"], root=payload["root"], prev_cp=payload["prev_cp"], kid=payload["kid"],
        fs=payload["fs"], sign1=s1, unsigned_payload=_dumps(unsigned),
        mono=opt["mono"], wall=opt["wall"], why=why, next_key=next_key,
    )
