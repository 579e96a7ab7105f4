"""Records queued together leave the shim as `recb` frames (record batches): in order, within
`batch_records`/`batch_bytes`, with `drop` frames exactly where the gaps are, and each
record's bytes as record() encoded them."""

from __future__ import annotations

import msgpack
import pytest

from firmware_shim import Shim
from firmware_shim.framing import STREAM_LIMIT_BYTES, FrameDecoder, FrameError, encode_frame, encode_recb, rec_fields
from firmware_shim.transport import TransportError


class MemoryTransport:
    """Takes every byte; `up` says whether connect() succeeds; answers nothing."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.up = False

    def connect(self, timeout_ms: int) -> None:
        if not self.up:
            raise TransportError("refused")

    def send(self, data, timeout_ms: int) -> int:
        self.out.extend(bytes(data))
        return len(data)

    def recv(self, timeout_ms: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _sent(t: MemoryTransport) -> list[tuple[str, object]]:
    """(frame type, record indices or drop count) in the order sent."""
    out: list[tuple[str, object]] = []
    for item in FrameDecoder(STREAM_LIMIT_BYTES).feed(bytes(t.out)):
        assert not isinstance(item, FrameError)
        if item["t"] == "recb":
            out.append(("recb", [msgpack.unpackb(b)["x"]["i"] for b in item["b"]]))
        elif item["t"] == "rec":
            out.append(("rec", [item["r"]["x"]["i"]]))
        elif item["t"] == "drop":
            out.append(("drop", item["n"]))
        else:
            out.append((item["t"], None))
    return out


def _shim(t: MemoryTransport, **settings) -> Shim:
    return Shim(transport=t, backoff_min_ms=1, backoff_max_ms=1, **settings)


def test_queued_records_go_as_batches_in_order_with_the_gap_where_it_is() -> None:
    t = MemoryTransport()
    shim = _shim(t, ring_frames=64, ring_bytes=1200, batch_records=4)
    for i in range(3):
        shim.record("t.rec", i=i)
    shim.record("t.big", i=99, pad="x" * 2000)  # does not fit the ring's bytes: dropped, counted
    for i in range(3, 10):
        shim.record("t.rec", i=i)
    t.up = True
    shim.poll(0)
    assert _sent(t) == [("hello", None), ("recb", [0, 1, 2]), ("drop", 1), ("recb", [3, 4, 5, 6]),
                        ("recb", [7, 8, 9])]
    assert shim.stats()["dropped"] == {"ring_overflow": 1}
    shim.record("t.rec", i=10)  # connected, nothing queued: a lone record goes as rec
    assert _sent(t)[-1] == ("rec", [10])


def test_batch_bytes_bound_and_batches_off() -> None:
    t = MemoryTransport()
    shim = _shim(t, batch_bytes=200)
    for i in range(5):
        shim.record("t.rec", i=i, pad="y" * 40)  # ~75-byte frames: two per 200 bytes
    t.up = True
    shim.poll(0)
    frames = _sent(t)[1:]
    assert frames == [("recb", [0, 1]), ("recb", [2, 3]), ("rec", [4])]
    for item in FrameDecoder(STREAM_LIMIT_BYTES).feed(bytes(t.out)):
        assert len(encode_frame(item)) <= 200

    off = MemoryTransport()
    shim = _shim(off, batch_records=1)  # for agents older than recb
    for i in range(3):
        shim.record("t.rec", i=i)
    off.up = True
    shim.poll(0)
    assert _sent(off)[1:] == [("rec", [0]), ("rec", [1]), ("rec", [2])]


def test_batch_items_are_the_bytes_record_encoded() -> None:
    t = MemoryTransport()
    shim = _shim(t)
    rs = [{"api": "t.rec", "src": {"net": "10.0.0.1", "id": "a"}, "x": {"i": i, "f": 1.5}} for i in range(3)]
    for r in rs:
        shim.record(r["api"], src=r["src"], i=r["x"]["i"], f=1.5)
    t.up = True
    shim.poll(0)
    recb = [i for i in FrameDecoder(STREAM_LIMIT_BYTES).feed(bytes(t.out)) if i["t"] == "recb"]
    assert len(recb) == 1
    assert recb[0]["b"] == [rec_fields(encode_frame({"t": "rec", "r": r})) for r in rs]


@pytest.mark.parametrize("n", [2, 15, 16, 300, 70000])
def test_encode_recb_equals_the_generic_encoder(n: int) -> None:
    bodies = [msgpack.packb({"api": "a" * (i % 300), "i": i}) for i in range(min(n, 400))]
    if n == 70000:
        bodies = [msgpack.packb({"pad": "z" * n})] * 2  # bin32 items
    assert encode_recb(bodies) == encode_frame({"t": "recb", "b": bodies})
    assert rec_fields(encode_frame({"t": "rec", "r": {"a": 1}, "id": 3})) is None  # only plain rec frames


def test_a_partly_sent_batch_is_resent_whole_after_a_reconnect() -> None:
    class Flaky(MemoryTransport):
        """Takes `room` bytes, then would block; raises while `broken`."""

        def __init__(self) -> None:
            super().__init__()
            self.room = 1 << 30
            self.broken = False

        def send(self, data, timeout_ms: int) -> int:
            if self.broken:
                raise TransportError("reset")
            n = min(len(data), self.room)
            self.room -= n
            self.out.extend(bytes(data[:n]))
            return n

    t = Flaky()
    shim = _shim(t)
    for i in range(4):
        shim.record("t.rec", i=i)
    hello = len(encode_frame({"t": "hello", "v": 1, "sw": shim.config.sw}))
    t.up = True
    t.room = hello + 20  # the hello, then part of the batch
    shim.poll(0)
    assert len(t.out) == hello + 20
    t.out.clear()
    t.broken = True
    shim.poll(0)  # the send fails: disconnected
    assert not shim.stats()["connected"]
    t.broken, t.room = False, 1 << 30
    shim.poll(0)  # reconnects and sends the whole batch again
    assert _sent(t) == [("hello", None), ("recb", [0, 1, 2, 3])]
