"""umsgpack and framing on CPython: byte-identical to the msgpack package, and any bytes
into the decoders give a value or one of our errors, nothing else."""

from __future__ import annotations

import hmac

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_shim import umsgpack
from firmware_shim.compat import hmac_sha256_portable
from firmware_shim.framing import (
    STREAM_LIMIT_BYTES,
    FrameDecoder,
    FrameEncodeError,
    FrameError,
    decode_body,
    encode_body,
    encode_frame,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.binary(max_size=300)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=40), inner, max_size=20),
    max_leaves=60,
)
small_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
maps = st.dictionaries(st.text(max_size=20), small_values, max_size=6)


@given(values)
@settings(max_examples=150, deadline=None)
def test_umsgpack_dumps_equals_msgpack_packb(obj) -> None:
    assert umsgpack.dumps(obj) == msgpack.packb(obj, use_bin_type=True)


@given(values)
@settings(max_examples=100, deadline=None)
def test_umsgpack_loads_reads_msgpack_bytes(obj) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    assert umsgpack.dumps(umsgpack.loads(data)) == data


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, object(), {1: "int key"}.keys(), 1j])
def test_umsgpack_refuses_what_msgpack_cannot_send(value) -> None:
    with pytest.raises(umsgpack.PackError):
        umsgpack.dumps(value)


def test_umsgpack_reads_float32_and_refuses_ext() -> None:
    assert umsgpack.loads(b"\xca\x3f\xc0\x00\x00") == 1.5
    with pytest.raises(umsgpack.UnpackError):
        umsgpack.loads(b"\xd4\x01\x00")  # fixext 1
    with pytest.raises(umsgpack.UnpackError):
        umsgpack.loads(b"\x91")  # truncated array
    with pytest.raises(umsgpack.UnpackError):
        umsgpack.loads(b"\x01\x02")  # trailing byte
    with pytest.raises(umsgpack.UnpackError):
        umsgpack.loads(b"\xa2\xff\xfe")  # invalid utf-8


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_umsgpack_loads_any_bytes_value_or_unpack_error(data) -> None:
    try:
        umsgpack.loads(data)
    except umsgpack.UnpackError:
        pass


@given(st.binary(max_size=64), st.binary(max_size=200))
def test_portable_hmac_equals_stdlib(key, msg) -> None:
    assert hmac_sha256_portable(key, msg) == hmac.new(key, msg, "sha256").digest()


@given(maps)
@settings(max_examples=100, deadline=None)
def test_frame_bytes_independent_of_key_order(obj) -> None:
    reversed_obj = dict(reversed(list(obj.items())))
    assert encode_frame(obj) == encode_frame(reversed_obj)
    assert decode_body(encode_frame(obj)[4:]) == obj


@given(maps)
@settings(max_examples=150, deadline=None)
def test_cpython_frame_body_equals_portable_sorted_encoding(obj) -> None:
    """The CPython path (sorted copy, then the msgpack package) writes the bytes umsgpack
    writes with sorted keys, which is what MicroPython sends."""
    shuffled = dict(reversed(list(obj.items())))
    assert encode_body(shuffled) == umsgpack.dumps(obj, True)


@given(st.lists(maps, min_size=1, max_size=4), st.data())
@settings(max_examples=100, deadline=None)
def test_decoder_gives_same_frames_for_any_chunking(objs, data) -> None:
    stream = b"".join(encode_frame(o) for o in objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(STREAM_LIMIT_BYTES)
    out = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[prev:cut]))
        prev = cut
    assert out == objs
    assert decoder.buffered_bytes == 0


@given(st.lists(maps, min_size=1, max_size=4), st.data())
@settings(max_examples=50, deadline=None)
def test_decoder_keeps_no_reference_to_the_callers_buffer(objs, data) -> None:
    """A caller may reuse its receive buffer (bytearray, memoryview) once feed() returns:
    the decoder must have copied whatever part of a frame it holds back."""
    stream = b"".join(encode_frame(o) for o in objs)
    cut = data.draw(st.integers(0, len(stream)))
    decoder = FrameDecoder(STREAM_LIMIT_BYTES)
    buf = bytearray(stream[:cut])
    out = decoder.feed(memoryview(buf) if cut % 2 else buf)
    buf[:] = b"\xff" * len(buf)
    out += decoder.feed(bytearray(stream[cut:]))
    assert out == objs
    assert decoder.buffered_bytes == 0


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_decoder_any_bytes_gives_maps_or_frame_errors(data) -> None:
    for item in FrameDecoder(64).feed(data):
        assert isinstance(item, (dict, FrameError))


def test_too_large_frame_is_skipped_and_stream_stays_usable() -> None:
    small = encode_frame({"t": "ping", "id": 1})
    big = encode_frame({"t": "rec", "pad": "x" * 1000})
    decoder = FrameDecoder(100)
    items = decoder.feed(small + big[:10]) + decoder.feed(big[10:500]) + decoder.feed(big[500:] + small)
    assert [type(i).__name__ for i in items] == ["dict", "FrameError", "dict"]
    assert items[1].code == "too_large" and items[1].size == len(big) - 4 and not items[1].fatal


def test_malformed_bodies_are_marked_and_stream_continues() -> None:
    ping = encode_frame({"t": "ping", "id": 2})
    bodies = [b"\x93\x01\x02\x03", b"\xc1", b"\x81\x01\x02", b"\x81\xa1a\x01\x00", b"\xd4\x05\x00"]
    stream = b"".join(len(b).to_bytes(4, "big") + b for b in bodies) + ping
    items = FrameDecoder(100).feed(stream)
    assert [getattr(i, "code", "map") for i in items] == ["malformed"] * 5 + ["map"]


def test_length_over_16_mib_loses_the_stream() -> None:
    decoder = FrameDecoder(100)
    items = decoder.feed((STREAM_LIMIT_BYTES + 1).to_bytes(4, "big") + b"junk")
    assert len(items) == 1 and items[0].fatal and items[0].code == "stream_lost"
    assert decoder.feed(encode_frame({"t": "ping"})) == []


@pytest.mark.parametrize(
    "obj",
    [[1, 2], {"a": {1: "int key"}}, {"a": object()}, {"a": 2**64}, {"a": 1, 2: "mixed keys"}, {1: 1, 2: 2}],
)
def test_encode_frame_refuses_bad_input_with_one_error(obj) -> None:
    with pytest.raises(FrameEncodeError):
        encode_frame(obj)


def test_encode_frame_honours_max_frame_bytes() -> None:
    with pytest.raises(FrameEncodeError, match="exceeds 100"):
        encode_frame({"pad": "x" * 200}, 100)
