"""Batch wire codec: byte-identical rebuild, raw fallback, limits, any bytes -> result or BatchError."""

import os
import zlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.core import batch, record
from agent.core.chain import ChainState, Sealer
from agent.core.export import Trust, enrollment_doc
from agent.core.keys import generate_signer
from agent.core.verify import VerifyState, check

DEV = "cp-0001"

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) \
    | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                      max_leaves=8)
fields = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("seq", "boot", "mono", "wall")),
                         values, max_size=8)


class Chain:
    def __init__(self, device_id=DEV, alg="Ed25519"):
        self.k0 = os.urandom(32)
        self.signer = generate_signer(alg)
        self.sealer = Sealer(ChainState.genesis(device_id, self.k0), self.signer)
        self.device_id = device_id
        self.t = 1000

    def trust(self):
        return Trust.from_enrollment(enrollment_doc(
            self.device_id, [(self.signer.kid, self.signer.alg, self.signer.public_bytes())], self.k0))

    def cp(self, records, why="timer"):
        for f in records:
            self.t += 7
            self.sealer.append(f, self.t, 1_700_000_000_000 + self.t)
        s = self.sealer.seal(mono=self.t + 1, wall=1_700_000_000_001 + self.t, reason=why)
        return s.message, list(s.records)


def meter(i):
    return {"kind": "api", "api": "ocpp.MeterValues", "src": {"id": "csms", "net": "10.0.0.2"},
            "sub": f"conn-{i % 2 + 1}", "st": "Accepted", "lat": 800 + i % 50, "rq": 310, "rs": 40,
            "x": {"wh": 100000 + i * 13, "a": 16}}


def verify_all(chain, items):
    trust = chain.trust()
    state = VerifyState.genesis(chain.device_id, chain.k0)
    for message, recs in items:
        state = check(chain.device_id, trust.keys, state, message, recs).state
    return state


@pytest.mark.parametrize("codec", ["none", "zlib", "zstd"])
def test_round_trip_is_byte_identical_and_verifies(codec):
    c = Chain()
    items = [c.cp([meter(i) for i in range(n)], why=w) for n, w in ((0, "start"), (30, "timer"), (1, "security"), (0, "heartbeat"), (256, "size"))]
    payload = batch.encode(DEV, items, codec=batch.CODEC_NAMES[codec])
    assert payload[0] == batch.CODEC_NAMES[codec]
    assert batch.decode(DEV, payload) == items
    assert verify_all(c, batch.decode(DEV, payload)).next_seq == 287


def test_compact_form_is_much_smaller_than_the_stored_bytes():
    c = Chain()
    items = [c.cp([meter(i + 40 * k) for i in range(40)]) for k in range(5)]
    raw = sum(len(m) + sum(map(len, r)) for m, r in items)
    payload = batch.encode(DEV, items, codec=batch.CODEC_ZLIB)
    assert len(payload) * 6 < raw
    body = batch._unpack(batch._decompress(batch.encode(DEV, items, codec=0), 1 << 22))
    assert all(not isinstance(e[0], bytes) for e in body[2])  # every checkpoint went compact
    assert body[7] == []  # no raw record


def test_non_canonical_record_travels_raw_and_still_verifies_bytes():
    c = Chain()
    msg, recs = c.cp([meter(0), meter(1)])
    # a float32 value is valid msgpack but does not re-encode to the same bytes
    odd = msgpack.packb({"seq": 99, "f": 1.5}, use_single_float=True)
    assert not record.is_canonical(odd)
    items = [(msg, recs + [odd])]  # checkpoint no longer matches; codec must still carry bytes
    out = batch.decode(DEV, batch.encode(DEV, items, codec=0))
    assert out == items
    body = batch._unpack(batch._decompress(batch.encode(DEV, items, codec=0), 1 << 22))
    assert body[7] == [odd] and isinstance(body[2][0][0], bytes)  # n mismatch -> raw checkpoint


def test_other_devices_checkpoint_is_sent_raw_and_kept_identical():
    other = Chain("cp-9999")
    items = [other.cp([meter(1)])]
    out = batch.decode(DEV, batch.encode(DEV, items))
    assert out == items  # rebuilt under DEV's name it would differ; raw keeps it as is


def test_cross_device_replay_of_compact_batch_fails_signature():
    c = Chain()
    items = [c.cp([meter(1)])]
    payload = batch.encode(DEV, items)
    [(message, _)] = batch.decode("cp-0002", payload)
    assert message != items[0][0]  # rebuilt with the topic's device id: cannot verify


def test_rotation_checkpoint_round_trips():
    c = Chain()
    c.sealer.rotate(generate_signer())
    items = [c.cp([meter(1)], why="rotate"), c.cp([meter(2)])]
    assert batch.decode(DEV, batch.encode(DEV, items)) == items


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(fields, max_size=5), min_size=1, max_size=4))
def test_any_records_round_trip(groups):
    c = Chain()
    items = []
    for g in groups:
        try:
            items.append(c.cp([{"kind": "api", **f} for f in g]))
        except record.RecordInvalid:
            return
    for codec in (0, 1, 2):
        assert batch.decode(DEV, batch.encode(DEV, items, codec=codec)) == items


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_batch_or_batch_error(data):
    try:
        batch.decode(DEV, data)
    except batch.BatchError:
        pass


_VALID = None


def _valid_body():
    global _VALID
    if _VALID is None:
        c = Chain()
        _VALID = batch.encode(DEV, [c.cp([meter(i) for i in range(5)]), c.cp([meter(9)])], codec=0)
    return _VALID


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_batches_give_a_batch_or_batch_error(data):
    payload = bytearray(_valid_body())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(1, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(2, len(payload)))
    try:
        batch.decode(DEV, bytes(payload[:cut]))
    except batch.BatchError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.recursive(scalars, lambda c: st.lists(c, max_size=8), max_leaves=40))
def test_structured_garbage_bodies_give_batch_error(obj):
    body = msgpack.packb([1, obj, obj, obj, obj, obj, obj, obj], use_bin_type=True)
    try:
        batch.decode(DEV, b"\x00" + body)
    except batch.BatchError:
        pass


def test_oversized_payload_is_refused_before_decompressing():
    with pytest.raises(batch.BatchTooLarge):
        batch.decode(DEV, b"\x00" + bytes(batch.MAX_PAYLOAD_BYTES))


def test_zlib_bomb_is_refused_without_inflating_it():
    co, chunk = zlib.compressobj(9), bytes(1 << 20)
    bomb = b"\x01" + b"".join(co.compress(chunk) for _ in range(200)) + co.flush()  # 200 MiB of zeros
    assert len(bomb) < batch.MAX_PAYLOAD_BYTES
    with pytest.raises(batch.BatchTooLarge):
        batch.decode(DEV, bomb)


def test_zstd_bomb_with_declared_size_is_refused_before_decompressing():
    zstd = pytest.importorskip("zstandard")
    cctx = zstd.ZstdCompressor(level=19)
    bomb = b"\x02" + cctx.compress(bytes(256 * 1024 * 1024))
    assert len(bomb) < batch.MAX_PAYLOAD_BYTES
    with pytest.raises(batch.BatchTooLarge, match="declares"):
        batch.decode(DEV, bomb)


def test_zstd_without_content_size_is_refused():
    zstd = pytest.importorskip("zstandard")
    frame = zstd.ZstdCompressor(write_content_size=False).compress(b"x" * 100)
    with pytest.raises(batch.BatchMalformed):
        batch.decode(DEV, b"\x02" + frame)


def test_unknown_codec_and_truncated_zlib_are_malformed():
    with pytest.raises(batch.BatchMalformed, match="codec"):
        batch.decode(DEV, b"\x07abc")
    good = batch.encode(DEV, [Chain().cp([meter(1)])], codec=batch.CODEC_ZLIB)
    with pytest.raises(batch.BatchMalformed):
        batch.decode(DEV, good[:-5])
