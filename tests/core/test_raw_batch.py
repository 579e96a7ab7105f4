"""Sealer.append_raw_batch: records whose fields arrive packed by the sender (``recb`` frames)."""

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from agent.core import batch as wire
from agent.core import record
from agent.core.chain import ChainState, Sealer
from agent.core.errors import RecordInvalid
from agent.core.export import verify_stream
from agent.core.keys import Ed25519Signer

from tests.core.helpers import Device

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) \
    | st.text(max_size=40) | st.binary(max_size=40)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=12)
# Up to 20 keys: fixmaps with and without room for the header, and map16 bodies.
fields = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in ("seq", "boot", "mono", "wall", "kind")),
                         values, max_size=20)
_SIGNER = Ed25519Signer.generate()
kinds = st.sampled_from([None, "api", "state"])


@given(st.lists(st.tuples(fields, kinds), min_size=1, max_size=8), st.integers(0, 2**40), st.integers(0, 2**45),
       st.integers(0, 2**20))
@settings(max_examples=200)
def test_raw_bytes_equal_the_dict_path_for_canonical_senders(items, mono, wall, boot):
    st_ = ChainState("d", boot, 7, 0, bytes(32), bytes(32))
    signer = _SIGNER  # Ed25519 signs deterministically: same records, same checkpoint
    raw, dicts = Sealer(st_, signer), Sealer(st_, signer)
    bodies, ks, batch = [], [], []
    for f, kind in items:
        sent = dict(f) if kind is None else {**f, "kind": kind}  # a sender's own kind sits among its fields
        bodies.append(msgpack.packb(sent, use_bin_type=True))
        ks.append(kind)
        batch.append(sent if kind is not None else {**sent, "kind": "api"})  # what ingest's dict path seals
    assert raw.append_raw_batch(bodies, ks, mono, wall) == 7
    assert dicts.append_batch(batch, mono, wall) == 7
    a, b = raw.seal(mono=mono, wall=wall, reason="size"), dicts.seal(mono=mono, wall=wall, reason="size")
    assert a.records == b.records
    assert a.kinds == b.kinds == [k or "api" for k in ks]
    assert a.message == b.message and a.state == b.state  # same Merkle root, same checkpoint
    for data, f in zip(a.records, batch):
        assert record.decode(data) == {"seq": record.decode(data)["seq"], "boot": boot, "mono": mono,
                                       "wall": wall, **f}


def _str8(s: str) -> bytes:
    raw = s.encode()
    return b"\xd9" + bytes((len(raw),)) + raw


def test_non_canonical_sender_keeps_its_bytes_and_verifies_end_to_end():
    dev = Device()
    # {"api": "x.y", "lat": 5, "sub": "c1"} as map16 with str8 strings and a uint32 — valid msgpack,
    # not the shortest form; and a float32 (msgpack-python always writes float64).
    odd = (b"\xde\x00\x03" + _str8("api") + _str8("x.y") + _str8("lat") + b"\xce\x00\x00\x00\x05"
           + _str8("sub") + _str8("c1"))
    f32 = b"\x82\xa3api\xa3f.g\xa1t\xca\x3f\xc0\x00\x00"
    assert msgpack.unpackb(odd) == {"api": "x.y", "lat": 5, "sub": "c1"}
    dev.sealer.append_raw_batch([odd, f32, msgpack.packb({"api": "ok"})], [None, None, None], 3, 4)
    sealed = dev.sealer.seal(mono=3, wall=4, reason="size")
    dev.items.append((sealed.message, list(sealed.records)))
    assert odd[3:] in sealed.records[0] and not record.is_canonical(sealed.records[0])
    assert record.decode(sealed.records[1])["t"] == 1.5 and not record.is_canonical(sealed.records[1])
    assert record.is_canonical(sealed.records[2])
    report = verify_stream(dev.trust(), dev.items)
    assert report.ok, report.error
    assert record.decode(sealed.records[0])["kind"] == "api"
    # The wire codec carries the odd records raw and rebuilds all three byte for byte.
    payload = wire.encode(dev.device_id, dev.items)
    assert wire.decode(dev.device_id, payload) == dev.items


@pytest.mark.parametrize("bad", [b"", b"\x92\x01\x02", b"\xa3abc", 7])
def test_a_body_that_is_not_a_map_refuses_the_whole_batch(bad):
    sealer = Sealer(ChainState.genesis("d", bytes(32)), Ed25519Signer.generate())
    with pytest.raises(RecordInvalid):
        sealer.append_raw_batch([msgpack.packb({"api": "a"}), bad], [None, None], 0, 0)
    assert sealer.pending == 0 and sealer.next_seq == 0
    with pytest.raises(RecordInvalid):
        sealer.append_raw_batch([b"\x80"], [None], -1, 0)
