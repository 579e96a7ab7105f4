"""agent.core.keys: Ed25519 through the system libcrypto gives the same bytes as through
`cryptography` (its fallback), verify never raises, and the daemon imports no `cryptography`."""

import os
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from agent.core import evp, keys
from agent.core.keys import ED25519, ES256, Ed25519Signer, PublicKey, generate_signer, load_signer

SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SIGNATURE = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


def _use(monkeypatch, choice):
    """Choose the backend for what the test builds next (the choice is cached per process)."""
    monkeypatch.setenv(keys.BACKEND_ENV, choice)
    keys._ed25519.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_choice():
    keys._ed25519.cache_clear()
    yield
    keys._ed25519.cache_clear()


@pytest.fixture
def use(monkeypatch):
    """``use("libcrypto")``: keys made from here on go through that backend (checked)."""
    def choose(choice):
        _use(monkeypatch, choice)
        assert keys.ed25519_backend()[0] == choice
    return choose


def test_auto_uses_libcrypto_here(monkeypatch):
    _use(monkeypatch, "auto")
    assert keys.ed25519_backend() == ("libcrypto", None)


def test_rfc8032_test1_through_each_backend(use):
    for choice in ("libcrypto", "cryptography"):
        use(choice)
        signer = Ed25519Signer.from_private_bytes(SECRET)
        assert signer.public_bytes() == PUBLIC
        assert signer.sign(b"") == SIGNATURE
        assert signer.private_bytes() == SECRET
        assert signer.kid == keys.key_id(PUBLIC)
        assert PublicKey(ED25519, PUBLIC).verify(SIGNATURE, b"")


def test_same_signatures_as_cryptography_for_random_keys_and_messages(monkeypatch):
    _use(monkeypatch, "libcrypto")
    for n in range(400):
        seed = os.urandom(32)
        msg = os.urandom(n * 13 % 3000) + b"\x00" * (n % 3)  # NULs inside and at the end
        ours = load_signer(ED25519, seed)
        theirs = Ed25519PrivateKey.from_private_bytes(seed)
        assert ours.public_bytes() == theirs.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert ours.sign(msg) == theirs.sign(msg)


def test_cross_verification_both_ways(use):
    use("libcrypto")
    lc_signer = Ed25519Signer.generate()
    lc_public = PublicKey(ED25519, lc_signer.public_bytes())
    use("cryptography")
    cr_signer = Ed25519Signer.from_private_bytes(lc_signer.private_bytes())
    cr_public = PublicKey(ED25519, lc_signer.public_bytes())
    assert type(lc_signer._key) is not type(cr_signer._key) and type(lc_public._key) is not type(cr_public._key)
    for msg in (b"", b"checkpoint", os.urandom(999)):
        assert lc_public.verify(cr_signer.sign(msg), msg)
        assert cr_public.verify(lc_signer.sign(msg), msg)
        assert not lc_public.verify(cr_signer.sign(msg), msg + b"!")
        assert not cr_public.verify(lc_signer.sign(msg), msg + b"!")


def test_fallback_when_libcrypto_is_unavailable_gives_the_same_bytes(monkeypatch):
    _use(monkeypatch, "auto")
    lc = Ed25519Signer.from_private_bytes(SECRET)

    def unavailable():
        raise evp.LibcryptoUnavailable("test: no libcrypto")
    monkeypatch.setattr(evp, "load", unavailable)
    keys._ed25519.cache_clear()
    assert keys.ed25519_backend() == ("cryptography", "test: no libcrypto")
    fb = Ed25519Signer.from_private_bytes(SECRET)
    assert type(fb._key) is not type(lc._key)
    msg = os.urandom(300)
    assert fb.sign(msg) == lc.sign(msg)
    assert fb.kid == lc.kid and fb.private_bytes() == lc.private_bytes()

    _use(monkeypatch, "libcrypto")  # required, not there: said loudly
    with pytest.raises(evp.LibcryptoUnavailable, match="test: no libcrypto"):
        Ed25519Signer.generate()


def test_env_forces_cryptography(monkeypatch):
    _use(monkeypatch, "cryptography")
    assert keys.ed25519_backend() == ("cryptography", f"{keys.BACKEND_ENV}=cryptography")
    assert Ed25519Signer.from_private_bytes(SECRET).sign(b"") == SIGNATURE


def test_unknown_env_value_is_refused_by_name(monkeypatch):
    _use(monkeypatch, "openssl")
    with pytest.raises(RuntimeError, match=f"{keys.BACKEND_ENV}='openssl'"):
        Ed25519Signer.generate()


def _bad_inputs(signer):
    msg = b"receipt"
    sig = signer.sign(msg)
    yield "short", sig[:63], msg
    yield "long", sig + b"\x00", msg
    yield "empty", b"", msg
    yield "other message", sig, msg + b"\x00"
    yield "str", "x" * 64, msg
    yield "None", None, msg
    yield "int message", sig, 7
    for bit in range(512):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        yield f"bit {bit}", bytes(flipped), msg


@pytest.mark.parametrize("choice", ["libcrypto", "cryptography"])
def test_bad_signatures_verify_false_and_never_raise(use, choice):
    use(choice)
    signer = Ed25519Signer.generate()
    public = PublicKey(ED25519, signer.public_bytes())
    assert public.verify(signer.sign(b"receipt"), b"receipt") is True
    for name, sig, msg in _bad_inputs(signer):
        assert public.verify(sig, msg) is False, name


@pytest.mark.parametrize("choice", ["libcrypto", "cryptography"])
def test_bad_public_keys(use, choice):
    use(choice)
    signer = Ed25519Signer.from_private_bytes(SECRET)
    for n in (0, 31, 33, 65):  # a wrong length is refused when the key is made, as before
        with pytest.raises(ValueError, match="32 bytes"):
            PublicKey(ED25519, bytes(n))
    for raw in (b"\xff" * 32, bytes(32), os.urandom(32), bytes([PUBLIC[0] ^ 1]) + PUBLIC[1:]):
        assert PublicKey(ED25519, raw).verify(signer.sign(b""), b"") is False


@settings(max_examples=300, deadline=None)
@given(public=st.binary(min_size=32, max_size=32), sig=st.binary(max_size=80), msg=st.binary(max_size=64))
def test_any_bytes_give_the_same_answer_from_both_backends(public, sig, msg):
    answers = []
    for choice in ("libcrypto", "cryptography"):
        os.environ[keys.BACKEND_ENV] = choice
        keys._ed25519.cache_clear()
        try:
            answers.append(PublicKey(ED25519, public).verify(sig, msg))
        finally:
            del os.environ[keys.BACKEND_ENV]
            keys._ed25519.cache_clear()
    assert answers[0] is answers[1] is False  # a random signature never verifies


def test_from_cryptography_key(monkeypatch):
    _use(monkeypatch, "libcrypto")
    private = Ed25519PrivateKey.from_private_bytes(SECRET)
    signer = Ed25519Signer.from_cryptography(private)
    assert signer.public_bytes() == PUBLIC and signer.sign(b"m") == private.sign(b"m")


def test_generated_keys_round_trip_and_differ(monkeypatch):
    _use(monkeypatch, "libcrypto")
    a, b = generate_signer(), generate_signer(ED25519)
    assert len(a.private_bytes()) == 32 and a.private_bytes() != b.private_bytes()
    again = load_signer(ED25519, a.private_bytes())
    assert again.kid == a.kid and again.sign(b"x") == a.sign(b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        load_signer(ED25519, a.private_bytes()[:31])


def test_es256_unchanged():
    signer = generate_signer(ES256)
    public = PublicKey(ES256, signer.public_bytes())
    sig = signer.sign(b"m")
    assert len(sig) == 64 and public.verify(sig, b"m")
    assert not public.verify(sig, b"n") and not public.verify(sig[:63], b"m") and not public.verify(None, b"m")
    again = load_signer(ES256, signer.private_bytes())
    assert again.kid == signer.kid and public.verify(again.sign(b"m"), b"m")


DAEMON_SCRIPT = textwrap.dedent("""
    import sys, tempfile
    import agent.daemon
    from agent.core import cose
    from agent.core.keys import PublicKey, ed25519_backend
    from agent.core.receipt import make_receipt, open_receipt
    from agent.keystore import FileKeyStore
    with tempfile.TemporaryDirectory() as d:
        signer = FileKeyStore.create(d + "/device").signer()  # generated, written, loaded back
        collector = FileKeyStore.create(d + "/collector").signer()
    message = cose.sign1(b"checkpoint", signer)
    assert cose.verify1(message, PublicKey.from_bytes(signer.alg, signer.public_bytes())) == b"checkpoint"
    receipt = make_receipt(collector, "dev-A", 5, 1, bytes(32))
    assert open_receipt(receipt, PublicKey(collector.alg, collector.public_bytes()), "dev-A").upto == 5
    print(ed25519_backend()[0], sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"))
""")


def _daemon_process(choice):
    env = {**os.environ, keys.BACKEND_ENV: choice}
    out = subprocess.run([sys.executable, "-c", DAEMON_SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split(maxsplit=1)


def test_daemon_signs_and_verifies_without_importing_cryptography():
    backend, modules = _daemon_process("auto")
    assert (backend, modules.strip()) == ("libcrypto", "[]")


def test_daemon_process_check_sees_cryptography_when_it_is_used():
    """The check above can fail: forced to the fallback, the same process imports it."""
    backend, modules = _daemon_process("cryptography")
    assert backend == "cryptography" and "'cryptography'" in modules
