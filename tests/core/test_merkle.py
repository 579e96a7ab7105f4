"""RFC 6962 Merkle tree hash and inclusion proofs."""

import hashlib

from hypothesis import given, settings, strategies as st

from agent.core import merkle


def rfc6962_mth(leaves):
    """The recursive definition of RFC 6962 §2.1, as written there."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_mth(leaves[:k]) + rfc6962_mth(leaves[k:])).digest()


def leaves_of(n):
    return [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(n)]


def test_known_vector_two_leaves():
    # RFC 6962 leaf hashing of "" and "\x00": the root must equal H(1 || H(0||"") || H(0||"\x00")).
    a, b = hashlib.sha256(b"\x00").digest(), hashlib.sha256(b"\x00\x00").digest()
    assert merkle.root([a, b]) == hashlib.sha256(b"\x01" + a + b).digest()


@given(st.integers(0, 300))
@settings(max_examples=120)
def test_root_equals_rfc6962_recursive_definition(n):
    leaves = leaves_of(n)
    assert merkle.root(leaves) == rfc6962_mth(leaves)


@given(st.integers(1, 130), st.data())
@settings(max_examples=150)
def test_inclusion_proofs_verify_and_tampering_fails(n, data):
    leaves = leaves_of(n)
    root = merkle.root(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
    assert not merkle.verify_inclusion(hashlib.sha256(b"other").digest(), i, n, proof, root)
    if n > 1:
        assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root) or leaves[i] == leaves[(i + 1) % n]
        if proof:
            bad = list(proof)
            bad[0] = bytes(32)
            assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)


@given(st.binary(max_size=40), st.integers(-5, 50), st.integers(-5, 50),
       st.lists(st.binary(max_size=40), max_size=8), st.binary(max_size=40))
def test_verify_inclusion_never_raises(leaf, index, size, proof, root):
    assert merkle.verify_inclusion(leaf, index, size, proof, root) in (True, False)
