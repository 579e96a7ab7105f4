"""Signing keys (Ed25519 default, ES256 for P-256-only secure elements) and the
forward-secure key ratchet (DESIGN §3). Pure: no files; the key store does I/O."""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

ED25519 = "Ed25519"
ES256 = "ES256"
ALGS = (ED25519, ES256)
COSE_ALG = {ED25519: -8, ES256: -7}  # RFC 9053: EdDSA, ES256
ALG_FROM_COSE = {v: k for k, v in COSE_ALG.items()}

FS_EVOLVE = b"veritrail/v1/evolve"
_ECDSA = ec.ECDSA(hashes.SHA256())
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
_POINT = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint


def key_id(public_bytes: bytes) -> str:
    """Key id: the first 8 bytes of SHA-256 of the raw public key, in hex."""
    return hashlib.sha256(public_bytes).digest()[:8].hex()


class Signer(Protocol):
    kid: str
    alg: str

    def public_bytes(self) -> bytes: ...
    def sign(self, data: bytes) -> bytes: ...


class Ed25519Signer:
    alg = ED25519

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self._public = private.public_key().public_bytes(*_RAW)
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> "Ed25519Signer":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "Ed25519Signer":
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def public_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class P256Signer:
    """ES256 with the raw r‖s signature COSE wants (RFC 9053 §2.1)."""

    alg = ES256

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        self._key = private
        self._public = private.public_key().public_bytes(*_POINT)
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> "P256Signer":
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> "P256Signer":
        return cls(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))

    def private_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def public_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, _ECDSA))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def generate_signer(alg: str = ED25519) -> Ed25519Signer | P256Signer:
    if alg == ED25519:
        return Ed25519Signer.generate()
    if alg == ES256:
        return P256Signer.generate()
    raise ValueError(f"unknown algorithm {alg!r}; use one of {ALGS}")


def load_signer(alg: str, private_bytes: bytes) -> Ed25519Signer | P256Signer:
    if alg == ED25519:
        return Ed25519Signer.from_private_bytes(private_bytes)
    if alg == ES256:
        return P256Signer.from_private_bytes(private_bytes)
    raise ValueError(f"unknown algorithm {alg!r}; use one of {ALGS}")


class PublicKey:
    """A verification key; ``verify`` returns False on any bad input, never raises."""

    def __init__(self, alg: str, raw: bytes) -> None:
        if alg == ED25519:
            self._key: Ed25519PublicKey | ec.EllipticCurvePublicKey = Ed25519PublicKey.from_public_bytes(raw)
        elif alg == ES256:
            self._key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        else:
            raise ValueError(f"unknown algorithm {alg!r}")
        self.alg = alg
        self.raw = bytes(raw)
        self.kid = key_id(self.raw)

    @classmethod
    def from_bytes(cls, alg: str, raw: bytes) -> "PublicKey":
        return cls(alg, raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            if self.alg == ED25519:
                self._key.verify(signature, data)  # type: ignore[call-arg]
            else:
                if len(signature) != 64:
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
                self._key.verify(der, data, _ECDSA)  # type: ignore[call-arg]
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


# --- forward-secure ratchet -------------------------------------------------------

def fs_evolve(key: bytes) -> bytes:
    """K_{e+1} = SHA-256("veritrail/v1/evolve" ‖ K_e)."""
    return hashlib.sha256(FS_EVOLVE + key).digest()


def fs_key_at(k0: bytes, epoch: int, *, from_epoch: int = 0) -> bytes:
    """K_epoch from K_from_epoch by evolving forward (never backward)."""
    if epoch < from_epoch:
        raise ValueError("forward-secure keys only evolve forward")
    key = k0
    for _ in range(epoch - from_epoch):
        key = fs_evolve(key)
    return key


def fs_tag(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload, "sha256")
