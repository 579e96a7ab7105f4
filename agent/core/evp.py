"""Ed25519 through the system libcrypto that Python's ``hashlib`` has already mapped.

`cryptography`'s Rust extension links its own OpenSSL: 8.3 MiB resident in the daemon,
next to the system libcrypto (3.5 MiB) that ``_hashlib`` maps anyway. This module binds,
with ctypes, the few EVP calls Ed25519 needs from that already-mapped library, so the
daemon signs and verifies without importing `cryptography` (docs/design-notes.md).

``load()`` finds the library, binds each function with its C types and runs a power-on
known-answer test (RFC 8032 §7.1 TEST 1: public key, signature, and a rejected flipped
bit) before handing the backend out. Anything missing or wrong raises
``LibcryptoUnavailable(reason)``; ``agent.core.keys`` then uses `cryptography`, with the
same bytes. This is the one place the core touches its environment: one read of
/proc/self/maps and a dlopen of a library already in the process, on first use.

Secrets: private keys live in libcrypto's memory; ``private_bytes()`` copies one out on
request (the key store) and zeroes its own buffer. Nothing here logs.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_void_p
from typing import Any

from .errors import LibcryptoError, LibcryptoUnavailable  # (also reached as evp.*)

EVP_PKEY_ED25519 = 1087  # NID_ED25519, the same in OpenSSL 1.1.1 and 3.x
KEY_BYTES = 32
SIGNATURE_BYTES = 64
SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1")


# RFC 8032 §7.1, TEST 1 (empty message)
KAT_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KAT_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
KAT_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def _buffer(data: Any) -> bytes:
    """bytes as they are; other buffers copied; anything else is a TypeError (as in `cryptography`)."""
    return data if type(data) is bytes else memoryview(data).tobytes()


def mapped_libcrypto(maps: str = "/proc/self/maps") -> str | None:
    """The path of the libcrypto already in this process (the one ``_hashlib`` uses), if any."""
    try:
        import _hashlib  # noqa: F401  (maps the libcrypto Python was built with)
    except ImportError:
        return None
    try:
        with open(maps, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.split(maxsplit=5)
                if len(fields) < 6:
                    continue
                # a library replaced on disk since it was mapped shows as "path (deleted)";
                # dlopen by that path still finds the loaded copy (glibc matches the name first)
                path = fields[5].rstrip("\n").removesuffix(" (deleted)")
                if os.path.basename(path).startswith("libcrypto.so"):
                    return path
    except OSError:
        return None
    return None


class Libcrypto:
    """The bound EVP functions of one libcrypto. Build it with ``load()``."""

    name = "libcrypto"
    reason: str | None = None  # why this backend and not the other: none needed

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.path = path

        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            fn = getattr(cdll, name)  # AttributeError when the symbol is missing
            fn.restype = restype  # pointers are c_void_p, never the default int
            fn.argtypes = argtypes
            return fn

        size_p = POINTER(c_size_t)
        self.new_raw_private_key = bind("EVP_PKEY_new_raw_private_key", c_void_p, c_int, c_void_p, c_char_p, c_size_t)
        self.new_raw_public_key = bind("EVP_PKEY_new_raw_public_key", c_void_p, c_int, c_void_p, c_char_p, c_size_t)
        self.get_raw_public_key = bind("EVP_PKEY_get_raw_public_key", c_int, c_void_p, c_void_p, size_p)
        self.get_raw_private_key = bind("EVP_PKEY_get_raw_private_key", c_int, c_void_p, c_void_p, size_p)
        self.pkey_free = bind("EVP_PKEY_free", None, c_void_p)
        self.md_ctx_new = bind("EVP_MD_CTX_new", c_void_p)
        self.md_ctx_free = bind("EVP_MD_CTX_free", None, c_void_p)
        # (ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey)
        self.sign_init = bind("EVP_DigestSignInit", c_int, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)
        self.sign = bind("EVP_DigestSign", c_int, c_void_p, c_void_p, size_p, c_char_p, c_size_t)
        self.verify_init = bind("EVP_DigestVerifyInit", c_int, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)
        self.verify = bind("EVP_DigestVerify", c_int, c_void_p, c_char_p, c_size_t, c_char_p, c_size_t)
        # a failed call leaves a record on the thread's OpenSSL error queue, which _ssl and
        # _hashlib share with us: every failure path clears it
        self.clear_errors = bind("ERR_clear_error", None)

    def ed25519_private(self, raw: Any) -> Ed25519Private:
        return Ed25519Private(self, _buffer(raw))

    def ed25519_public(self, raw: Any) -> Ed25519Public:
        return Ed25519Public(self, _buffer(raw))


class _Pkey:
    """Owns one EVP_PKEY; freed when the object goes."""

    __slots__ = ("_lib", "_pkey")

    def __init__(self, lib: Libcrypto, pkey: int | None, what: str) -> None:
        self._lib = lib
        self._pkey = pkey
        if not pkey:
            lib.clear_errors()
            raise ValueError(f"libcrypto refused the {what}")

    def __del__(self) -> None:
        pkey, self._pkey = getattr(self, "_pkey", None), None
        if pkey:
            self._lib.pkey_free(pkey)

    def _raw(self, get: Any, size: int, what: str) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = c_size_t(size)
        try:
            if get(self._pkey, buf, byref(n)) != 1 or n.value != size:
                self._lib.clear_errors()
                raise LibcryptoError(what)
            return buf.raw
        finally:
            ctypes.memset(buf, 0, size)


class Ed25519Private(_Pkey):
    __slots__ = ("_public",)

    def __init__(self, lib: Libcrypto, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError("An Ed25519 private key is 32 bytes long")
        super().__init__(lib, lib.new_raw_private_key(EVP_PKEY_ED25519, None, raw, KEY_BYTES), "Ed25519 private key")
        self._public = self._raw(lib.get_raw_public_key, KEY_BYTES, "EVP_PKEY_get_raw_public_key")

    def public_bytes(self) -> bytes:
        return self._public

    def private_bytes(self) -> bytes:
        return self._raw(self._lib.get_raw_private_key, KEY_BYTES, "EVP_PKEY_get_raw_private_key")

    def sign(self, data: Any) -> bytes:
        data = _buffer(data)
        lib = self._lib
        # a fresh EVP_MD_CTX per call (0.3 µs of ~45): no state shared between threads
        ctx = lib.md_ctx_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new")
        try:
            sig = ctypes.create_string_buffer(SIGNATURE_BYTES)
            n = c_size_t(SIGNATURE_BYTES)
            if lib.sign_init(ctx, None, None, None, self._pkey) != 1:
                lib.clear_errors()
                raise LibcryptoError("EVP_DigestSignInit")
            if lib.sign(ctx, sig, byref(n), data, len(data)) != 1 or n.value != SIGNATURE_BYTES:
                lib.clear_errors()
                raise LibcryptoError("EVP_DigestSign")
            return sig.raw
        finally:
            lib.md_ctx_free(ctx)


class Ed25519Public(_Pkey):
    __slots__ = ()

    def __init__(self, lib: Libcrypto, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError("An Ed25519 public key is 32 bytes long")
        super().__init__(lib, lib.new_raw_public_key(EVP_PKEY_ED25519, None, raw, KEY_BYTES), "Ed25519 public key")

    def verify(self, signature: Any, data: Any) -> bool:
        """True only for a valid signature; False for any bad input (never raises on it)."""
        try:
            signature, data = _buffer(signature), _buffer(data)
        except TypeError:
            return False
        if len(signature) != SIGNATURE_BYTES:
            return False
        lib = self._lib
        ctx = lib.md_ctx_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new")
        try:
            if lib.verify_init(ctx, None, None, None, self._pkey) != 1:
                lib.clear_errors()
                raise LibcryptoError("EVP_DigestVerifyInit")
            # 1 valid; 0 invalid; <0 an error, which `cryptography` also reports as invalid
            ok = lib.verify(ctx, signature, SIGNATURE_BYTES, data, len(data)) == 1
            if not ok:
                lib.clear_errors()
            return ok
        finally:
            lib.md_ctx_free(ctx)


def self_test(lib: Libcrypto) -> None:
    """RFC 8032 §7.1 TEST 1, and a flipped bit rejected; raises LibcryptoUnavailable."""
    try:
        key = lib.ed25519_private(KAT_SECRET)
        checks = [("public key", key.public_bytes() == KAT_PUBLIC),
                  ("signature", key.sign(b"") == KAT_SIGNATURE),
                  ("private key round trip", key.private_bytes() == KAT_SECRET)]
        public = lib.ed25519_public(KAT_PUBLIC)
        checks.append(("verify", public.verify(KAT_SIGNATURE, b"")))
        for byte in (0, 32):  # one bit of R, one of S
            flipped = bytearray(KAT_SIGNATURE)
            flipped[byte] ^= 1
            checks.append((f"flipped bit in byte {byte} rejected", not public.verify(bytes(flipped), b"")))
        checks.append(("other message rejected", not public.verify(KAT_SIGNATURE, b"\x00")))
    except (LibcryptoError, ValueError, ctypes.ArgumentError) as exc:
        raise LibcryptoUnavailable(f"{lib.path}: self-test: {exc}") from None
    failed = [name for name, ok in checks if not ok]
    if failed:
        raise LibcryptoUnavailable(f"{lib.path}: self-test (RFC 8032 TEST 1) failed: {', '.join(failed)}")


def load() -> Libcrypto:
    """The libcrypto already in the process (else by soname), bound and self-tested."""
    mapped = mapped_libcrypto()
    reasons = []
    for name in (mapped,) if mapped else SONAMES:
        try:
            lib = Libcrypto(ctypes.CDLL(name), name)
        except OSError as exc:
            reasons.append(f"{name}: cannot load ({exc})")
            continue
        except AttributeError as exc:
            reasons.append(f"{name}: missing symbol ({exc})")
            continue
        self_test(lib)
        return lib
    raise LibcryptoUnavailable("; ".join(reasons))
