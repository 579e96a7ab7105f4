"""Signed rule bundles (DESIGN §7): COSE_Sign1 by the fleet key over a CBOR payload.

Payload (deterministic CBOR map)::

    {"format": 1, "version": N (uint, strictly increasing per device),
     "created": wall ms, "packs": zlib(CBOR {file name: TOML text})}

The pack texts are deflated because a COSE message the core accepts is at most 16 KiB;
they are inflated with a hard output limit (bomb-safe). ``open_bundle`` checks signature,
shape and version; the engine then compiles every rule before it swaps anything.
"""

from __future__ import annotations

import zlib
from typing import Any

import cbor2

from agent.core.cose import sign1, verify1
from agent.core.errors import BadSignature, CoseMalformed
from agent.core.keys import ED25519, ES256, PublicKey, Signer

from .errors import BundleRejected

BUNDLE_FORMAT = 1
MAX_PACKS_BYTES = 1024 * 1024
MAX_PACKS = 32


def build_bundle(packs: dict[str, str], *, version: int, signer: Signer, created_ms: int) -> bytes:
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    if not packs:
        raise ValueError("a bundle needs at least one pack")
    blob = zlib.compress(cbor2.dumps(dict(packs), canonical=True), 9)
    payload = cbor2.dumps({"format": BUNDLE_FORMAT, "version": version, "created": created_ms, "packs": blob},
                          canonical=True)
    return sign1(payload, signer)


def public_key(key: PublicKey | bytes) -> PublicKey:
    if isinstance(key, PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)):
        try:
            return PublicKey.from_bytes(ED25519 if len(key) == 32 else ES256, bytes(key))
        except ValueError:
            raise BundleRejected("fleet public key unusable") from None
    raise BundleRejected("fleet public key of unknown type")


def open_bundle(message: bytes, key: PublicKey | bytes | None) -> tuple[int, int, dict[str, str]]:
    """(version, created_ms, packs). ``key=None`` skips the signature (only for a bundle the
    device itself verified and stored). Raises BundleRejected(reason)."""
    try:
        if key is None:
            from agent.core.cose import parse1
            payload = parse1(message).payload
        else:
            payload = verify1(message, public_key(key))
    except BadSignature:
        raise BundleRejected("bad signature (not signed by the fleet key)") from None
    except CoseMalformed as exc:
        raise BundleRejected(f"malformed COSE message: {exc}") from None
    doc = _cbor(payload, "payload")
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleRejected(f"payload is not a format-{BUNDLE_FORMAT} bundle")
    version, created, blob = doc.get("version"), doc.get("created"), doc.get("packs")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleRejected("version missing or not a positive integer")
    if not isinstance(created, int) or not isinstance(blob, bytes):
        raise BundleRejected("created/packs missing")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob, MAX_PACKS_BYTES)
        if inflater.unconsumed_tail:
            raise BundleRejected(f"packs inflate beyond {MAX_PACKS_BYTES} bytes")
    except zlib.error:
        raise BundleRejected("packs are not valid zlib data") from None
    packs = _cbor(raw, "packs")
    if not (isinstance(packs, dict) and 0 < len(packs) <= MAX_PACKS
            and all(isinstance(k, str) and isinstance(v, str) for k, v in packs.items())):
        raise BundleRejected(f"packs must map 1..{MAX_PACKS} file names to TOML text")
    return version, created, packs


def _cbor(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise BundleRejected(f"{what} is not CBOR ({type(exc).__name__})") from None
