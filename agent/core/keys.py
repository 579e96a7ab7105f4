"""Signing keys (Ed25519 default, ES256 for P-256-only secure elements) and the
forward-secure key ratchet (DESIGN §3). Pure: no files; the key store does I/O.

Ed25519 goes through the system libcrypto (``agent.core.evp``) when it loads and passes
its self-test, else through `cryptography`; both give the same bytes. `cryptography` is
imported only for ES256 and for that fallback, so the daemon does not carry its 8 MiB.
``VERITRAIL_CRYPTO_BACKEND`` = ``auto`` (default), ``libcrypto`` (required) or
``cryptography`` (forced) chooses, for tests and diagnosis.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any, Protocol

from . import evp

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ED25519 = "Ed25519"
ES256 = "ES256"
ALGS = (ED25519, ES256)
COSE_ALG = {ED25519: -8, ES256: -7}  # RFC 9053: EdDSA, ES256
ALG_FROM_COSE = {v: k for k, v in COSE_ALG.items()}

FS_EVOLVE = b"veritrail/v1/evolve"
BACKEND_ENV = "VERITRAIL_CRYPTO_BACKEND"
BACKENDS = ("auto", "libcrypto", "cryptography")


def key_id(public_bytes: bytes) -> str:
    """Key id: the first 8 bytes of SHA-256 of the raw public key, in hex."""
    return hashlib.sha256(public_bytes).digest()[:8].hex()


class Signer(Protocol):
    kid: str
    alg: str

    def public_bytes(self) -> bytes: ...
    def sign(self, data: bytes) -> bytes: ...


# --- Ed25519 backends ------------------------------------------------------------

class _Ed25519Private(Protocol):
    def public_bytes(self) -> bytes: ...
    def private_bytes(self) -> bytes: ...
    def sign(self, data: bytes) -> bytes: ...


class _Verifier(Protocol):
    def verify(self, signature: bytes, data: bytes) -> bool: ...


class _Ed25519Backend(Protocol):
    name: str
    reason: str | None

    def ed25519_private(self, raw: bytes) -> _Ed25519Private: ...
    def ed25519_public(self, raw: bytes) -> _Verifier: ...


class _CryptographyEd25519:
    """The fallback: the same Ed25519 through `cryptography`, imported on first use."""

    name = "cryptography"

    def __init__(self, reason: str) -> None:
        self.reason: str | None = reason

    def ed25519_private(self, raw: bytes) -> _CryptographyEd25519Private:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        return _CryptographyEd25519Private(Ed25519PrivateKey.from_private_bytes(raw))

    def ed25519_public(self, raw: bytes) -> _CryptographyEd25519Public:
        return _CryptographyEd25519Public(raw)


class _CryptographyEd25519Private:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization as s
        self._key = key
        self._public = key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
        self._private_args = s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption()

    def public_bytes(self) -> bytes:
        return self._public

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(*self._private_args)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class _CryptographyEd25519Public:
    def __init__(self, raw: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        self._key = Ed25519PublicKey.from_public_bytes(raw)
        self._invalid = InvalidSignature

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data)
        except (self._invalid, ValueError, TypeError):
            return False
        return True


@functools.cache
def _ed25519() -> _Ed25519Backend:
    """The Ed25519 backend, chosen once per process (tests clear the cache)."""
    choice = os.environ.get(BACKEND_ENV, "auto") or "auto"
    if choice not in BACKENDS:
        raise RuntimeError(f"{BACKEND_ENV}={choice!r}: use one of {', '.join(BACKENDS)}")
    if choice == "cryptography":
        return _CryptographyEd25519(f"{BACKEND_ENV}=cryptography")
    try:
        return evp.load()
    except evp.LibcryptoUnavailable as exc:
        if choice == "libcrypto":
            raise
        return _CryptographyEd25519(exc.reason)


def ed25519_backend() -> tuple[str, str | None]:
    """("libcrypto", None), or ("cryptography", why the libcrypto backend is not used)."""
    backend = _ed25519()
    return backend.name, backend.reason


# --- signers ----------------------------------------------------------------------

class Ed25519Signer:
    alg = ED25519

    def __init__(self, private: bytes) -> None:
        """``private``: the raw 32-byte Ed25519 private key (RFC 8032 §5.1.5)."""
        self._key = _ed25519().ed25519_private(private)
        self._public = self._key.public_bytes()
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        # RFC 8032 §5.1.5: the private key is 32 octets of cryptographically secure random data
        return cls(os.urandom(32))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Ed25519Signer:
        return cls(raw)

    @classmethod
    def from_cryptography(cls, private: Ed25519PrivateKey) -> Ed25519Signer:
        """From a `cryptography` key object (the constructor's argument before it took bytes)."""
        from cryptography.hazmat.primitives import serialization as s
        return cls(private.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption()))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes()

    def public_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


@functools.cache
def _ec() -> Any:
    """`cryptography`'s EC pieces, imported on first ES256 use."""
    from types import SimpleNamespace

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
    return SimpleNamespace(
        ec=ec, ecdsa=ec.ECDSA(hashes.SHA256()), invalid=InvalidSignature,
        point=(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
        decode_dss=decode_dss_signature, encode_dss=encode_dss_signature,
    )


class P256Signer:
    """ES256 with the raw r‖s signature COSE wants (RFC 9053 §2.1)."""

    alg = ES256

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        c = _ec()
        if not isinstance(private.curve, c.ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        self._c = c
        self._key = private
        self._public = private.public_key().public_bytes(*c.point)
        self.kid = key_id(self._public)

    @classmethod
    def generate(cls) -> P256Signer:
        ec = _ec().ec
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> P256Signer:
        ec = _ec().ec
        return cls(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))

    def private_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def public_bytes(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        r, s = self._c.decode_dss(self._key.sign(data, self._c.ecdsa))
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


# --- verification -----------------------------------------------------------------

class _P256Public:
    def __init__(self, raw: bytes) -> None:
        self._c = _ec()
        self._key = self._c.ec.EllipticCurvePublicKey.from_encoded_point(self._c.ec.SECP256R1(), raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        der = self._c.encode_dss(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            self._key.verify(der, data, self._c.ecdsa)
        except self._c.invalid:
            return False
        return True


class PublicKey:
    """A verification key; ``verify`` returns False on any bad input, never raises."""

    def __init__(self, alg: str, raw: bytes) -> None:
        if alg == ED25519:
            self._key: _Verifier = _ed25519().ed25519_public(raw)
        elif alg == ES256:
            self._key = _P256Public(raw)
        else:
            raise ValueError(f"unknown algorithm {alg!r}")
        self.alg = alg
        self.raw = bytes(raw)
        self.kid = key_id(self.raw)

    @classmethod
    def from_bytes(cls, alg: str, raw: bytes) -> PublicKey:
        return cls(alg, raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            return self._key.verify(signature, data)
        except (ValueError, TypeError):
            return False


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
