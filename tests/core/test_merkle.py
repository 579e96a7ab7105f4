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


@given(st.integers(min_value=0, max_value=600))
@settings(max_examples=60, deadline=None)
def test_frontier_pushed_leaf_by_leaf_gives_the_tree_hash(n):
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    f = merkle.Frontier()
    for leaf in leaves:
        f.push(leaf)
    assert f.count == n and f.root() == merkle.root(leaves)


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_a_sealed_range_has_the_tree_hash_of_its_records_however_they_were_appended(sizes):
    """Small appends go through the Frontier, bulk ones not; any mix seals the same root."""
    import os
    from agent.core.chain import ChainState, Sealer
    from agent.core.checkpoint import parse
    from agent.core.keys import generate_signer
    from agent.core.record import leaf_hash
    sealer = Sealer(ChainState("dev-m", 1, 0, 0, bytes(32), os.urandom(32)), generate_signer())
    for i, size in enumerate(sizes):
        batch = [{"kind": "cmd" if i % 2 else "api", "api": f"a{i}.{j}"} for j in range(size)]
        sealer.append_batch(batch, 10, 20) if size > 1 else sealer.append(batch[0], 10, 20)
    sealed = sealer.seal(mono=10, wall=20, reason="size")
    assert parse(sealed.message).root == merkle.root([leaf_hash(r) for r in sealed.records])


@given(st.integers(1, 300), st.data())
@settings(max_examples=60)
def test_inclusion_proofs_of_many_leaves_equal_one_at_a_time(n, data):
    leaves = leaves_of(n)
    indices = data.draw(st.lists(st.integers(0, n - 1), max_size=10))
    assert merkle.inclusion_proofs(leaves, indices) == [merkle.inclusion_proof(leaves, i) for i in indices]
