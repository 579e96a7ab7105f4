"""The agent's frame reader gives exactly what the shared codec (firmware_shim.framing) gives."""

from __future__ import annotations

import struct

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ingest import STREAM_LIMIT_BYTES, FrameReader, encode_frame
from firmware_shim import framing


def _norm(items):
    return [("err", i.code) if not isinstance(i, dict) else ("ok", i) for i in items]


def _feed_all(reader, data: bytes, cuts: list[int]):
    out, prev = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        out.extend(reader.feed(data[prev:cut]))
        prev = cut
    return out


values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=20)
                      | st.binary(max_size=20), lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
frame = st.one_of(
    st.dictionaries(st.text(max_size=8), values, max_size=5).map(lambda d: framing.encode_frame(d)),
    st.binary(max_size=40).map(lambda b: struct.pack(">I", len(b)) + b),                 # any body
    st.integers(0, 300).map(lambda n: struct.pack(">I", n) + b"\x91" * n),               # arrays, too large
    st.sampled_from([struct.pack(">I", 0), struct.pack(">I", 2) + b"\xc7\x00",          # empty, ext
                     struct.pack(">I", 1) + b"\xc1"]),                                    # reserved byte
)


@settings(max_examples=400, deadline=None)
@given(st.lists(frame, max_size=8), st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_reader_matches_the_shared_decoder(frames, cuts, lost):
    data = b"".join(frames)
    if lost:
        data += struct.pack(">I", STREAM_LIMIT_BYTES + 1) + b"rest is ignored"
    ours = _feed_all(FrameReader(64), data, cuts)
    theirs = _feed_all(framing.FrameDecoder(64), data, cuts)
    assert _norm(ours) == _norm(theirs)


def test_constants_and_reply_frames_agree_with_the_shared_codec():
    assert STREAM_LIMIT_BYTES == framing.STREAM_LIMIT_BYTES
    reply = {"t": "verdict", "id": 3, "v": "allow", "r": [], "seq": 9, "rb": 1}
    assert framing.FrameDecoder().feed(encode_frame(reply)) == [reply]


def test_too_large_body_is_skipped_across_reads_and_the_stream_goes_on():
    reader = FrameReader(16)
    big = struct.pack(">I", 100) + b"\x00" * 100
    ok = encode_frame({"t": "ping", "id": 1})
    items = reader.feed(big[:30]) + reader.feed(big[30:] + ok)
    assert [getattr(i, "code", i) for i in items] == ["too_large", {"t": "ping", "id": 1}]


def test_non_map_body_is_malformed():
    reader = FrameReader(1000)
    body = msgpack.packb([1, 2])
    items = reader.feed(struct.pack(">I", len(body)) + body)
    assert items[0].code == "malformed" and not items[0].fatal
