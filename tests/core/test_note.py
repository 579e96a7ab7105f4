"""Signed notes, log checkpoints and cosignatures (agent/core/note.py)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from agent.core import note
from agent.core.errors import LogFormatError
from agent.core.keys import Ed25519Signer


def signer(name: str = "example.com/log", t: int = note.ED25519_TYPE) -> note.NoteSigner:
    return note.NoteSigner(name, Ed25519Signer(hashlib.sha256(name.encode()).digest()), t)


def test_checkpoint_signs_and_opens():
    s = signer()
    cp = note.LogCheckpoint("example.com/log", 20852163, hashlib.sha256(b"r").digest())
    text = note.sign_note(cp.text(), [s])
    got, n = note.open_checkpoint(text, note.parse_vkey(s.verifier.vkey()))
    assert got == cp and n.text == cp.text()
    # the key id is the spec's: SHA-256(name || 0x0A || 0x01 || public key)[:4]
    assert s.verifier.id == hashlib.sha256(b"example.com/log\n\x01" + s.verifier.public).digest()[:4]
    # the signature verifies with an independent Ed25519 implementation
    raw = note.unb64(n.signatures[0].line.split(" ")[2].strip(), "sig")
    Ed25519PublicKey.from_public_bytes(s.verifier.public).verify(raw[4:], cp.text().encode())


def test_wrong_key_or_altered_text_is_refused():
    s, other = signer(), signer("example.com/other")
    cp = note.LogCheckpoint("example.com/log", 3, bytes(32))
    text = note.sign_note(cp.text(), [s])
    with pytest.raises(LogFormatError, match="origin"):
        note.open_checkpoint(text, other.verifier)
    impostor = note.NoteSigner("example.com/log", Ed25519Signer(bytes(32)))
    with pytest.raises(LogFormatError, match="no signature"):
        note.open_checkpoint(text, impostor.verifier)
    with pytest.raises(LogFormatError):
        note.open_checkpoint(text.replace("\n3\n", "\n4\n"), s.verifier)


def test_cosignature_v1():
    log, w = signer(), signer("witness.example/w1", note.COSIG_TYPE)
    cp = note.LogCheckpoint("example.com/log", 10, bytes(32))
    text = note.sign_note(cp.text(), [log]) + w.cosign_line(cp.text(), 1679315147)
    n = note.parse_note(text)
    (sig,) = note.matching(n, w.verifier)
    assert note.cosignature_time(sig) == 1679315147
    assert note.verify_signature(n, sig, w.verifier)
    msg = b"cosignature/v1\ntime 1679315147\n" + cp.text().encode()
    Ed25519PublicKey.from_public_bytes(w.verifier.public).verify(sig.sig[8:], msg)
    assert not note.verify_signature(note.parse_note(text.replace("\n10\n", "\n11\n")), sig, w.verifier)


def test_vkey_round_trip_and_bad_vkeys():
    v = signer().verifier
    assert note.parse_vkey(v.vkey()) == v
    name, hid, key = v.vkey().split("+", 2)
    for bad in (f"{name}+00000000+{key}", f"{name}+{hid}", "a b+00+AA==", f"{name}+{hid}+{key}x"):
        with pytest.raises(LogFormatError):
            note.parse_vkey(bad)


@pytest.mark.parametrize("bad", [
    "", "no blank line\n— a AAAAAAA=\n", "text\n\n", "text\n\n— a\n", "text\n\n- a AAAAAAA=\n",
    "text\n\n— a AAAAAAA=", "te\x01xt\n\n— a AAAAAAA=\n", "text\n\n— a AAAA\n", "text\n\n— a+b AAAAAAA=\n",
])
def test_malformed_notes(bad):
    with pytest.raises(LogFormatError):
        note.parse_note(bad)


@pytest.mark.parametrize("bad", ["o\n01\nAAAA\n", "o\n1\n", "o\n1\nAAAA\n", "\n1\n" + note.b64(bytes(32)) + "\n",
                                 "o\n1\n" + note.b64(bytes(32)) + "\n\n", "o\n-1\n" + note.b64(bytes(32)) + "\n",
                                 "o\n1\n" + note.b64(bytes(32))])
def test_malformed_checkpoint_text(bad):
    with pytest.raises(LogFormatError):
        note.parse_checkpoint_text(bad)


@given(st.binary(max_size=600))
def test_note_parser_gives_a_note_or_our_error(data):
    try:
        n = note.parse_note(data)
    except LogFormatError:
        return
    assert n.encode().encode() == data


@given(st.text(max_size=300))
def test_checkpoint_and_vkey_parsers_give_a_result_or_our_error(text):
    for fn in (note.parse_checkpoint_text, note.parse_vkey):
        try:
            fn(text)
        except LogFormatError:
            pass
    v = signer().verifier
    try:
        note.open_checkpoint(text, v)
    except LogFormatError:
        pass
