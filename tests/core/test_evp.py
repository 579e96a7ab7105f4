"""agent.core.evp: Ed25519 through the libcrypto that hashlib already mapped, bound with
ctypes, self-tested on load, every key freed; anything wrong makes it unavailable."""

import ctypes
import gc
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import evp

# RFC 8032 §7.1 TEST 2 and TEST 3 (TEST 1 is the power-on self-test's own vector)
RFC8032 = [
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]


@pytest.fixture(scope="module")
def lib():
    if evp.mapped_libcrypto() is None:
        pytest.skip("this Python's hashlib maps no libcrypto")
    return evp.load()  # must load where a libcrypto is mapped: a failure here is a failure


def _rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_loads_the_libcrypto_hashlib_mapped_and_maps_no_other(lib):
    with open("/proc/self/maps") as f:
        paths = {line.split(maxsplit=5)[5].strip() for line in f if "libcrypto" in line}
    assert paths == {lib.path}


def test_mapped_libcrypto_reads_a_replaced_library_by_its_loaded_name(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r--p 00000000 fe:00 1  /usr/lib/libssl.so.3\n"
        "7f01-7f02 r-xp 00000000 00:00 0 \n"
        "7f02-7f03 r--p 00000000 fe:00 2  /opt/ssl/lib/libcrypto.so.3 (deleted)\n")
    assert evp.mapped_libcrypto(str(maps)) == "/opt/ssl/lib/libcrypto.so.3"
    maps.write_text("7f00-7f01 r--p 00000000 fe:00 1  /usr/lib/libssl.so.3\n")
    assert evp.mapped_libcrypto(str(maps)) is None
    assert evp.mapped_libcrypto(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("secret,public,message,signature", RFC8032)
def test_rfc8032_vectors(lib, secret, public, message, signature):
    key = lib.ed25519_private(bytes.fromhex(secret))
    assert key.public_bytes().hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    assert key.private_bytes().hex() == secret
    assert lib.ed25519_public(bytes.fromhex(public)).verify(bytes.fromhex(signature), bytes.fromhex(message))


def test_self_test_passes_on_the_real_library(lib):
    evp.self_test(lib)


def test_self_test_refuses_a_library_whose_signature_differs(lib, monkeypatch):
    monkeypatch.setattr(evp, "KAT_SIGNATURE", bytes(64))
    with pytest.raises(evp.LibcryptoUnavailable, match="signature"):
        evp.self_test(lib)


def test_self_test_refuses_a_verify_that_accepts_anything(monkeypatch):
    lib = evp.load()  # a copy of its own: the binding is patched below
    real = lib.verify
    monkeypatch.setattr(lib, "verify", lambda *args: 1)
    with pytest.raises(evp.LibcryptoUnavailable, match="flipped bit in byte 0 rejected"):
        evp.self_test(lib)
    monkeypatch.setattr(lib, "verify", lambda *args: -1)  # an error is no valid signature
    with pytest.raises(evp.LibcryptoUnavailable, match=r"failed: verify$"):
        evp.self_test(lib)
    monkeypatch.setattr(lib, "verify", real)
    evp.self_test(lib)


def test_self_test_turns_a_failing_call_into_unavailable(monkeypatch):
    lib = evp.load()
    monkeypatch.setattr(lib, "sign_init", lambda *args: 0)
    with pytest.raises(evp.LibcryptoUnavailable, match="EVP_DigestSignInit"):
        evp.self_test(lib)


def test_load_refuses_a_library_without_the_symbols(monkeypatch):
    monkeypatch.setattr(evp, "mapped_libcrypto", lambda: "libc.so.6")
    with pytest.raises(evp.LibcryptoUnavailable, match="libc.so.6: missing symbol"):
        evp.load()


def test_load_falls_back_to_sonames_and_says_why_none_loaded(monkeypatch):
    monkeypatch.setattr(evp, "mapped_libcrypto", lambda: None)
    monkeypatch.setattr(evp, "SONAMES", ("libcrypto.so.0.0.404",))
    with pytest.raises(evp.LibcryptoUnavailable, match="libcrypto.so.0.0.404: cannot load"):
        evp.load()


def test_matches_cryptography_byte_for_byte(lib):
    for n in range(300):
        seed, msg = os.urandom(32), os.urandom(n * 7 % 1500)
        ours, theirs = lib.ed25519_private(seed), Ed25519PrivateKey.from_private_bytes(seed)
        sig = ours.sign(msg)
        assert sig == theirs.sign(msg)
        theirs.public_key().verify(sig, msg)  # raises if not valid
        assert lib.ed25519_public(ours.public_bytes()).verify(theirs.sign(msg), msg)


def test_sign_and_verify_take_any_buffer_and_refuse_other_types(lib):
    key = lib.ed25519_private(bytearray(evp.KAT_SECRET))
    assert key.sign(bytearray(b"m")) == key.sign(memoryview(b"m")) == key.sign(b"m")
    public = lib.ed25519_public(memoryview(evp.KAT_PUBLIC))
    assert public.verify(bytearray(key.sign(b"m")), memoryview(b"m"))
    with pytest.raises(TypeError):
        key.sign("m")
    for bad in ("m", 64, None, object()):
        assert public.verify(bad, b"m") is False
        assert public.verify(key.sign(b"m"), bad) is False


@pytest.mark.parametrize("n", [0, 31, 33, 64])
def test_wrong_key_lengths_are_value_errors(lib, n):
    with pytest.raises(ValueError, match="32 bytes"):
        lib.ed25519_private(bytes(n))
    with pytest.raises(ValueError, match="32 bytes"):
        lib.ed25519_public(bytes(n))


def test_every_key_is_freed_once(lib, monkeypatch):
    freed = []
    real = lib.pkey_free
    monkeypatch.setattr(lib, "pkey_free", lambda p: (freed.append(p), real(p)))
    key = lib.ed25519_private(evp.KAT_SECRET)
    public = lib.ed25519_public(evp.KAT_PUBLIC)
    pointers = [key._pkey, public._pkey]
    assert all(pointers) and not freed
    del key, public
    gc.collect()
    assert sorted(freed) == sorted(pointers)
    with pytest.raises(ValueError):
        lib.ed25519_private(bytes(31))  # refused before anything was allocated
    gc.collect()
    assert len(freed) == 2


def test_no_leak_over_many_keys_and_signatures(lib):
    """An EVP_PKEY or EVP_MD_CTX kept per call would grow RSS by tens of MiB here."""
    def churn(n):
        for _ in range(n):
            key = lib.ed25519_private(os.urandom(32))
            lib.ed25519_public(key.public_bytes()).verify(key.sign(b"x" * 100), b"x" * 100)
            key.private_bytes()
    churn(2000)  # warm up allocator arenas
    before = _rss_kib()
    churn(20000)
    assert _rss_kib() - before < 4096


def test_private_bytes_buffer_is_zeroed(lib, monkeypatch):
    zeroed = []
    real = ctypes.memset
    monkeypatch.setattr(evp.ctypes, "memset", lambda buf, c, n: (zeroed.append((buf.raw, n)), real(buf, c, n)))
    assert lib.ed25519_private(evp.KAT_SECRET).private_bytes() == evp.KAT_SECRET
    assert (evp.KAT_SECRET, 32) in zeroed
