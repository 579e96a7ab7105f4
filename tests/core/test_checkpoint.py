"""Checkpoints are standard COSE_Sign1: an independent implementation (pycose) verifies them."""

import cbor2
import pytest
from hypothesis import given, settings, strategies as st
from pycose.keys import EC2Key, OKPKey
from pycose.messages import Sign1Message

from agent.core import checkpoint
from agent.core.errors import CheckpointMalformed
from tests.core.helpers import Device


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_pycose_verifies_our_checkpoints(alg):
    d = Device(alg=alg)
    message, _ = d.batch(10)
    msg = Sign1Message.decode(message)
    pub = d.signer.public_bytes()
    msg.key = OKPKey(crv="Ed25519", x=pub) if alg == "Ed25519" else EC2Key(crv="P_256", x=pub[1:33], y=pub[33:])
    assert msg.verify_signature()
    payload = cbor2.loads(msg.payload)
    assert payload["cp"] == 0 and payload["n"] == 10 and payload["dev"] == "dev-A"
    # and a flipped payload byte makes pycose refuse it too
    tampered = Sign1Message.decode(message)
    tampered.payload = msg.payload[:-1] + bytes([msg.payload[-1] ^ 1])
    tampered.key = msg.key
    assert not tampered.verify_signature()


def test_parse_round_trip_and_fields():
    d = Device()
    d.batch(3)
    message, _ = d.batch(2)
    cp = checkpoint.parse(message)
    assert (cp.cp, cp.first, cp.last, cp.n, cp.kid, cp.why) == (1, 3, 4, 2, d.signer.kid, "size")
    assert cp.prev_cp == checkpoint.message_hash(d.items[0][0])


def test_first_checkpoint_links_to_genesis():
    d = Device(device_id="charger-7")
    message, _ = d.batch(1)
    assert checkpoint.parse(message).prev_cp == checkpoint.genesis_hash("charger-7")


def test_non_canonical_payload_is_refused():
    d = Device()
    message, _ = d.batch(1)
    cp = checkpoint.parse(message)
    payload = cbor2.loads(cp.sign1.payload)
    reordered = dict(reversed(list(payload.items())))
    from agent.core import cose
    forged = cose.sign1(cbor2.dumps(reordered), d.signer)
    with pytest.raises(CheckpointMalformed):
        checkpoint.parse(forged)


@given(st.binary(max_size=400))
@settings(max_examples=500)
def test_parse_any_bytes_gives_checkpoint_or_our_error(data):
    try:
        checkpoint.parse(data)
    except CheckpointMalformed:
        pass


@given(st.binary(max_size=70_000), st.binary(min_size=1, max_size=300))
@settings(max_examples=200)
def test_hand_encoded_cose_envelope_equals_cbor2(payload, protected):
    """sign1 and the Sig_structure are encoded by hand; they must be exactly what cbor2 gives."""
    from agent.core import cose
    assert cose._sig_structure(protected, payload) == cbor2.dumps(["Signature1", protected, b"", payload])

    class FixedSigner:
        alg, kid = "Ed25519", "00112233aabbccdd"

        def sign(self, data: bytes) -> bytes:
            return bytes(64)

    message = cose.sign1(payload, FixedSigner())
    prot = cose._protected("Ed25519", "00112233aabbccdd")
    assert message == cbor2.dumps(cbor2.CBORTag(18, [prot, {}, payload, bytes(64)]))


def test_a_payload_that_decodes_to_something_cbor2_cannot_encode_is_malformed_not_a_crash():
    """Found by the verifier fuzz test: cbor2 decodes a stray break byte (0xff) where a
    value belongs into a marker object, which the canonical re-encoding then refused with
    its own exception type."""
    import os

    from agent.core import cose
    from agent.core.keys import generate_signer
    signer = generate_signer()
    fields = {"dev": "d", "boot": 1, "cp": 0, "first": 0, "last": 0, "n": 1, "root": os.urandom(32),
              "prev_cp": os.urandom(32), "mono": 1, "wall": 2, "why": "x"}
    good = checkpoint.seal(fields, signer, os.urandom(32))
    payload = cbor2.loads(cose.parse1(good).payload)
    raw = cbor2.dumps(payload, canonical=True)
    assert raw.count(b"\x63why\x61x") == 1
    bad = cose.sign1(raw.replace(b"\x63why\x61x", b"\x63why\xff"), signer)
    assert cbor2.loads(cose.parse1(bad).payload)["why"] is not None  # decodes, to the marker
    with pytest.raises(CheckpointMalformed):
        checkpoint.parse(bad)
