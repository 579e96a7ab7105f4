"""Minimal COSE_Sign1 (RFC 9052 §4.2) with deterministic CBOR (cbor2, canonical).

Protected header: {1: alg, 4: kid (bstr)}; unprotected header empty; attached payload;
tag 18. Any standard COSE library verifies these (a test uses pycose).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cbor2

from .errors import BadSignature, CoseMalformed
from .keys import ALG_FROM_COSE, COSE_ALG, PublicKey, Signer

COSE_SIGN1_TAG = 18
MAX_MESSAGE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Sign1:
    protected: bytes
    alg: str
    kid: str
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return _sig_structure(self.protected, self.payload)


def _bstr(data: bytes) -> bytes:
    """CBOR byte string head + data (RFC 8949 §3: shortest length form)."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 | n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    else:
        head = b"\x5a" + n.to_bytes(4, "big")
    return head + data


# ["Signature1", protected, external_aad = b"", payload]: an array of strings, encoded
# by hand (it is on every seal and every check); tests pin it to cbor2's encoding.
_SIG1_HEAD = b"\x84\x6aSignature1"
_TAG18_ARRAY4 = b"\xd2\x84"


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return b"".join((_SIG1_HEAD, _bstr(protected), b"\x40", _bstr(payload)))


@functools.lru_cache(maxsize=64)
def _protected(alg: str, kid: str) -> bytes:
    return cbor2.dumps({1: COSE_ALG[alg], 4: bytes.fromhex(kid)}, canonical=True)


def sign1(payload: bytes, signer: Signer) -> bytes:
    protected = _protected(signer.alg, signer.kid)
    signature = signer.sign(_sig_structure(protected, payload))
    # tag 18 [protected, {} (unprotected), payload, signature]
    return b"".join((_TAG18_ARRAY4, _bstr(protected), b"\xa0", _bstr(payload), _bstr(signature)))


def parse1(message: bytes) -> Sign1:
    """Parse without verifying; raises CoseMalformed."""
    if not isinstance(message, (bytes, bytearray)):
        raise CoseMalformed("not bytes")
    if len(message) > MAX_MESSAGE_BYTES:
        raise CoseMalformed(f"{len(message)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        obj = cbor2.loads(bytes(message))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise CoseMalformed(f"CBOR: {type(exc).__name__}") from None
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise CoseMalformed(f"tag {obj.tag}, expected {COSE_SIGN1_TAG}")
        obj = obj.value
    if not (isinstance(obj, list) and len(obj) == 4):
        raise CoseMalformed("not a 4-element array")
    protected, unprotected, payload, signature = obj
    if not (isinstance(protected, bytes) and isinstance(unprotected, dict)
            and isinstance(payload, bytes) and isinstance(signature, bytes)):
        raise CoseMalformed("wrong element types")
    try:
        header = cbor2.loads(protected)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CoseMalformed(f"protected header: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise CoseMalformed("protected header is not a map")
    alg = ALG_FROM_COSE.get(header.get(1))  # type: ignore[arg-type]
    kid = header.get(4)
    if alg is None:
        raise CoseMalformed(f"algorithm {header.get(1)!r} not allowed")
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 32:
        raise CoseMalformed("missing or bad kid")
    return Sign1(protected, alg, kid.hex(), payload, signature)


def verify1(message: bytes | Sign1, public_key: PublicKey) -> bytes:
    """Return the payload if the signature verifies with ``public_key``."""
    msg = message if isinstance(message, Sign1) else parse1(message)
    if msg.alg != public_key.alg:
        raise BadSignature(msg.kid)
    if not public_key.verify(msg.signature, msg.to_be_signed()):
        raise BadSignature(msg.kid)
    return msg.payload
