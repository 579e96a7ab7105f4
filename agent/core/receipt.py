"""Signed messages from the collector to a device (DESIGN §5): receipts and control.

Both are COSE_Sign1 by the collector's key over a canonical-CBOR map:

    receipt  {"v": 1, "t": "rcpt", "dev", "upto" (seq), "cp", "cp_hash"}
    control  {"v": 1, "t": "ctl", "dev", "kind" (str), "body" (bytes), "id" (uint)}

``open_*`` verify the signature with the collector's public key and the device id, and
raise ``BadSignature`` / ``CoseMalformed`` / ``WireMessageMalformed`` (never anything else).
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from . import cose
from .errors import VeritrailError
from .keys import PublicKey, Signer

VERSION = 1


class WireMessageMalformed(VeritrailError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed collector message: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Receipt:
    dev: str
    upto: int
    cp: int
    cp_hash: bytes


@dataclass(frozen=True, slots=True)
class Control:
    dev: str
    kind: str
    body: bytes
    id: int


def make_receipt(signer: Signer, dev: str, upto: int, cp: int, cp_hash: bytes) -> bytes:
    payload = {"v": VERSION, "t": "rcpt", "dev": dev, "upto": upto, "cp": cp, "cp_hash": cp_hash}
    return cose.sign1(cbor2.dumps(payload, canonical=True), signer)


def make_control(signer: Signer, dev: str, kind: str, body: bytes, id: int) -> bytes:
    payload = {"v": VERSION, "t": "ctl", "dev": dev, "kind": kind, "body": body, "id": id}
    return cose.sign1(cbor2.dumps(payload, canonical=True), signer)


def _open(message: bytes, key: PublicKey, dev: str, t: str) -> dict:
    payload = cose.verify1(message, key)
    try:
        obj = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise WireMessageMalformed(f"payload CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION or obj.get("t") != t:
        raise WireMessageMalformed(f"not a version-{VERSION} {t} message")
    if obj.get("dev") != dev:
        raise WireMessageMalformed("addressed to another device")
    return obj


def open_receipt(message: bytes, key: PublicKey, dev: str) -> Receipt:
    obj = _open(message, key, dev, "rcpt")
    upto, cp, h = obj.get("upto"), obj.get("cp"), obj.get("cp_hash")
    if type(upto) is not int or type(cp) is not int or cp < 0 or upto < -1 or not (isinstance(h, bytes) and len(h) == 32):
        raise WireMessageMalformed("bad receipt fields")
    return Receipt(dev, upto, cp, h)


def open_control(message: bytes, key: PublicKey, dev: str) -> Control:
    obj = _open(message, key, dev, "ctl")
    kind, body, id_ = obj.get("kind"), obj.get("body"), obj.get("id")
    if not isinstance(kind, str) or not isinstance(body, bytes) or type(id_) is not int or id_ < 0:
        raise WireMessageMalformed("bad control fields")
    return Control(dev, kind, body, id_)
