"""RFC 6962 proofs, tiles and log entries (agent/core/tlog.py) against the recursive definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import tlog
from agent.core.errors import LogFormatError


def H(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


# --- RFC 6962 §2.1, written out recursively, as the reference ---------------------

def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return H(b"")
    if n == 1:
        return H(b"\x00" + d[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return H(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [b"entry %d" % i for i in range(n)]


def list_node(d: list[bytes]):
    def node(level: int, index: int) -> bytes:
        lo = index << level
        assert lo + (1 << level) <= len(d), "proof asked for a node outside the tree"
        return mth(d[lo:lo + (1 << level)])
    return node


def tiles_of(d: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every tile (full or the partial one) of the tree, built from the definition."""
    out: dict[tuple[int, int], bytes] = {}
    level_hashes = [H(b"\x00" + e) for e in d]
    level = 0
    while level_hashes:
        for t in range(0, len(level_hashes), 256):
            out[(level, t // 256)] = b"".join(level_hashes[t:t + 256])
        level_hashes = [tlog.perfect_hash(level_hashes[i:i + 256]) for i in range(0, len(level_hashes) - 255, 256)]
        level += 1
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 700), st.data())
def test_inclusion_proof_matches_the_recursive_definition(size, data):
    d = leaves(size)
    index = data.draw(st.integers(0, size - 1))
    proof = tlog.inclusion_proof(index, size, list_node(d))
    assert proof == path(index, d)
    r = mth(d)
    assert tlog.root(size, list_node(d)) == r
    assert tlog.verify_inclusion(H(b"\x00" + d[index]), index, size, proof, r)
    assert not tlog.verify_inclusion(H(b"\x00" + b"other"), index, size, proof, r)
    if size > 1:
        assert not tlog.verify_inclusion(H(b"\x00" + d[index]), (index + 1) % size, size, proof, r)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 700), st.data())
def test_consistency_proof_matches_the_recursive_definition(new, data):
    d = leaves(new)
    old = data.draw(st.integers(0, new))
    proof = tlog.consistency_proof(old, new, list_node(d))
    expected = [] if old in (0, new) else subproof(old, d, True)
    assert proof == expected
    assert tlog.verify_consistency(old, new, mth(d[:old]), mth(d), proof)
    if 0 < old < new:
        assert not tlog.verify_consistency(old, new, mth(d[:old - 1] + [b"x"]), mth(d), proof)
        assert not tlog.verify_consistency(old, new, mth(d[:old]), mth(d[:-1] + [b"y"]), proof)
        bad = list(proof)
        bad[data.draw(st.integers(0, len(bad) - 1))] = H(b"tampered")
        assert not tlog.verify_consistency(old, new, mth(d[:old]), mth(d), bad)


def test_consistency_of_a_rewritten_prefix_fails():
    d = leaves(40)
    rewritten = d[:10] + [b"altered"] + d[11:]
    proof = tlog.consistency_proof(20, 40, list_node(rewritten))
    assert not tlog.verify_consistency(20, 40, mth(d[:20]), mth(rewritten), proof)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70_000 // 97), st.data())
def test_proofs_from_tiles_equal_proofs_from_the_definition(k, data):
    size = k * 97 + data.draw(st.integers(0, 96))
    d = leaves(size)
    tiles = tiles_of(d)
    node = tlog.tile_node(lambda L, N: tiles[(L, N)])
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    ref = list_node(d) if size < 3000 else None
    assert tlog.root(size, node) == mth(d)
    if ref is not None:
        assert tlog.inclusion_proof(index, size, node) == tlog.inclusion_proof(index, size, ref)
        assert tlog.consistency_proof(old, size, node) == tlog.consistency_proof(old, size, ref)
    proof = tlog.inclusion_proof(index, size, node)
    assert tlog.verify_inclusion(H(b"\x00" + d[index]), index, size, proof, mth(d))
    cons = tlog.consistency_proof(old, size, node)
    assert tlog.verify_consistency(old, size, mth(d[:old]), mth(d), cons)


def test_tile_widths_follow_the_spec_example():
    # tlog-tiles: a tree of 70,000 has 273 full level-0 tiles and a partial one of 112,
    # a full level-1 tile and a partial one of 17, and a partial level-2 tile of 1
    assert [tlog.tile_width(0, i, 70_000) for i in (272, 273, 274)] == [256, 112, 0]
    assert [tlog.tile_width(1, i, 70_000) for i in (0, 1, 2)] == [256, 17, 0]
    assert tlog.tile_width(2, 0, 70_000) == 1
    assert tlog.tile_width(1, 0, 256) == 1 and tlog.tile_width(0, 0, 256) == 256


def test_tile_paths_round_trip():
    assert tlog.tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tlog.tile_path(1, 5, 17) == "tile/1/005.p/17"
    assert tlog.tile_path("entries", 0) == "tile/entries/000"
    assert tlog.parse_tile_path("0/x001/x234/067") == tlog.TileRef(0, 1234067, 256)
    assert tlog.parse_tile_path("entries/005.p/3") == tlog.TileRef(None, 5, 3)
    for bad in ("00/000", "0/1", "0/x1/000", "0/000.p/0", "0/000.p/256", "0/000.p/05", "64/000", "0/x000",
                "0/000/000", "a/000", "0", "0/000.p", "entries/x001.p/3"):
        with pytest.raises(LogFormatError):
            tlog.parse_tile_path(bad)


@given(st.integers(0, 2**63 - 1), st.integers(1, 256))
def test_tile_path_round_trip_any_index(n, w):
    p = tlog.tile_path(3, n, w)
    assert tlog.parse_tile_path(p.removeprefix("tile/")) == tlog.TileRef(3, n, w)


def test_entries_round_trip_and_limits():
    e = tlog.LogEntry("cp-0001", 7, H(b"m"), 1_700_000_000_000)
    assert tlog.decode_entry(e.encode()) == e
    bundle = tlog.encode_bundle([e.encode()] * 3)
    assert tlog.decode_bundle(bundle, 3) == [e.encode()] * 3
    with pytest.raises(LogFormatError):
        tlog.decode_bundle(bundle, 2)
    with pytest.raises(LogFormatError):
        tlog.encode_entry("", 1, H(b""), 0)
    with pytest.raises(LogFormatError):
        tlog.decode_entry(e.encode()[:-1])


@given(st.binary(max_size=400))
def test_entry_decoder_gives_an_entry_or_our_error(data):
    try:
        e = tlog.decode_entry(data)
    except LogFormatError:
        return
    assert e.encode() == data


@given(st.binary(max_size=2000), st.integers(-2, 300))
def test_bundle_and_tile_decoders_give_a_result_or_our_error(data, width):
    for fn in (tlog.decode_bundle, tlog.split_tile):
        try:
            out = fn(data, width)
        except LogFormatError:
            continue
        assert len(out) == width


@given(st.text(max_size=60))
def test_tile_path_parser_gives_a_result_or_our_error(text):
    try:
        ref = tlog.parse_tile_path(text)
    except LogFormatError:
        return
    level = "entries" if ref.level is None else ref.level
    assert tlog.tile_path(level, ref.index, ref.width) == "tile/" + text


@given(st.lists(st.binary(max_size=40), max_size=70))
def test_proof_decoder_gives_a_result_or_our_error(hashes):
    try:
        out = tlog.decode_proof(hashes)
    except LogFormatError:
        return
    assert all(len(h) == 32 for h in out)


@given(st.integers(-3, 50), st.integers(-3, 50), st.lists(st.binary(min_size=32, max_size=32), max_size=8))
def test_verifiers_never_raise(a, b, proof):
    r = H(b"r")
    assert tlog.verify_inclusion(r, a, b, proof, r) in (True, False)
    assert tlog.verify_consistency(a, b, r, r, proof) in (True, False)
