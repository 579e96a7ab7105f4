"""Record encoding and the Sealer: bytes are msgpack, fixed at write, round-trip."""

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from agent.core import record
from agent.core.chain import ChainState, Sealer
from agent.core.errors import RecordInvalid, RecordMalformed
from agent.core.keys import Ed25519Signer

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) \
    | st.text(max_size=40) | st.binary(max_size=40)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=12)
fields = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in ("seq", "boot", "mono", "wall")),
                         values, max_size=20)


@given(fields)
@settings(max_examples=300)
def test_record_round_trips_and_unknown_keys_are_kept(f):
    data = record.encode(f)
    assert record.decode(data) == f
    assert record.is_canonical(data)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_decode_any_bytes_gives_a_map_or_record_malformed(data):
    try:
        out = record.decode(data)
    except RecordMalformed:
        return
    assert isinstance(out, dict)


@given(st.lists(fields, min_size=1, max_size=8), st.integers(0, 2**40), st.integers(0, 2**45), st.integers(0, 2**20))
@settings(max_examples=200)
def test_sealer_bytes_equal_packb_of_the_merged_record(batch, mono, wall, boot):
    st_ = ChainState("d", boot, 7, 0, bytes(32), bytes(32))
    one, many = Sealer(st_, Ed25519Signer.generate()), Sealer(st_, Ed25519Signer.generate())
    singles = [one.append(f, mono, wall)[1] for f in batch]
    first = many.append_batch(batch, mono, wall)
    assert first == 7
    expected = [msgpack.packb({"seq": 7 + i, "boot": boot, "mono": mono, "wall": wall, **f}, use_bin_type=True)
                for i, f in enumerate(batch)]
    assert singles == expected
    assert many.seal(mono=0, wall=0, reason="size").records == expected


def test_caller_cannot_set_header_fields():
    sealer = Sealer(ChainState.genesis("d", bytes(32)), Ed25519Signer.generate())
    for key in ("seq", "boot", "mono", "wall"):
        with pytest.raises(RecordInvalid):
            sealer.append({key: 1}, 0, 0)
        with pytest.raises(RecordInvalid):
            sealer.append_batch([{"api": "x"}, {key: 1}], 0, 0)
    assert sealer.pending == 0  # the batch was all-or-nothing


def test_unencodable_field_is_a_clear_error():
    sealer = Sealer(ChainState.genesis("d", bytes(32)), Ed25519Signer.generate())
    with pytest.raises(RecordInvalid):
        sealer.append({"x": object()}, 0, 0)


def test_validate_checks_known_fields():
    record.validate({"kind": "cmd", "v": "block", "r": ["R1"], "st": "Rejected", "future": [1]})
    for bad in ({"kind": "nope"}, {"seq": -1}, {"v": "maybe"}, {"r": "R1"}, {"src": "x"}, {"lat": 1.5}):
        with pytest.raises(RecordInvalid):
            record.validate(bad)


def test_seal_cuts_contiguous_ranges_and_heartbeats_are_empty():
    sealer = Sealer(ChainState.genesis("d", bytes(32)), Ed25519Signer.generate())
    sealer.append_batch([{"api": "a"}] * 3, 1, 1)
    s1 = sealer.seal(mono=1, wall=1, reason="size")
    hb = sealer.seal(mono=2, wall=2, reason="heartbeat")
    sealer.append({"api": "b"}, 3, 3)
    s2 = sealer.seal(mono=3, wall=3, reason="security")
    assert (s1.cp, s1.first, s1.last) == (0, 0, 2)
    assert (hb.cp, hb.first, hb.last, hb.records) == (1, 3, 2, [])
    assert (s2.cp, s2.first, s2.last) == (2, 3, 3)
    assert s2.state.prev_cp_hash == s2.hash and s2.state.next_seq == 4
