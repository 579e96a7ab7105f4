"""Frame codec of the local protocol (docs/protocol.md), shared by shim and agent.

    frame = length (4 bytes, unsigned big-endian) || body (one msgpack map)

`encode_frame(obj)` writes every map in sorted key order (keys must be str), so the same
object gives the same bytes on CPython (``msgpack`` package) and on MicroPython
(`umsgpack`). `FrameDecoder(max_frame_bytes).feed(data)` is incremental and returns a list
whose items are either decoded maps (dict) or `FrameError` markers:

    FrameError.code == "too_large"    length > max_frame_bytes: the body is skipped as it
                                      arrives; the stream stays usable (reply err/too_large)
    FrameError.code == "malformed"    length 0, body not msgpack, or not a map; the
                                      stream stays usable (reply err/malformed)
    FrameError.code == "stream_lost"  length > 16 MiB: framing cannot be trusted, close the
                                      connection; `feed` returns [] from then on

Portable core: runs unchanged on CPython and MicroPython.
"""

import struct

try:
    import msgpack as _msgpack  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:  # MicroPython, or CPython without the msgpack package
    _msgpack = None

from firmware_shim import umsgpack

__all__ = [
    "encode_frame",
    "encode_recb",
    "rec_fields",
    "encode_body",
    "decode_body",
    "FrameDecoder",
    "FrameError",
    "FrameEncodeError",
    "DEFAULT_MAX_FRAME_BYTES",
    "STREAM_LIMIT_BYTES",
    "HEADER_BYTES",
]

HEADER_BYTES = 4
DEFAULT_MAX_FRAME_BYTES = 65536
# A declared length above this means we lost the frame boundaries (or a hostile peer).
STREAM_LIMIT_BYTES = 16 * 1024 * 1024


class FrameEncodeError(ValueError):
    """The object cannot be sent as a frame (type, range, key type or size)."""


class FrameError:
    """A marker returned by `FrameDecoder.feed` in place of a frame it could not decode."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    STREAM_LOST = "stream_lost"

    def __init__(self, code, size, detail):
        self.code = code
        self.size = size  # declared body length in bytes
        self.detail = detail  # short text, never payload bytes

    @property
    def fatal(self):
        return self.code == FrameError.STREAM_LOST

    def __repr__(self):
        return "FrameError(%r, size=%d, detail=%r)" % (self.code, self.size, self.detail)


_CONTAINERS = (dict, list, tuple)


def _sorted_copy(obj):
    """Rebuild maps with sorted str keys (CPython path: msgpack keeps dict order).

    Runs for every map of every frame sent, so kept lean: keys checked before they are
    compared (a key of another type never meets its own __lt__), one C sort, no call for a
    value that is not itself a container, and one Python frame per map level."""
    if isinstance(obj, dict):
        for key in obj:
            if not isinstance(key, str):
                _str_key(key)
        out = {}
        for key in sorted(obj):
            value = obj[key]
            out[key] = _sorted_copy(value) if isinstance(value, _CONTAINERS) else value
        return out
    if isinstance(obj, (list, tuple)):
        return [_sorted_copy(item) if isinstance(item, _CONTAINERS) else item for item in obj]
    return obj


def _str_key(key):
    if not isinstance(key, str):
        raise FrameEncodeError("map key of type %s (frames allow str keys only)" % type(key).__name__)
    return key


def _check_keys(obj):
    if isinstance(obj, dict):
        for key in obj:
            _str_key(key)
            _check_keys(obj[key])
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _check_keys(item)


def encode_body(obj):
    """msgpack bytes of `obj` with sorted map keys; raises FrameEncodeError."""
    if not isinstance(obj, dict):
        raise FrameEncodeError("a frame body must be a map, not %s" % type(obj).__name__)
    if _msgpack is not None:
        try:
            return _msgpack.packb(_sorted_copy(obj), use_bin_type=True)
        except FrameEncodeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise FrameEncodeError("cannot encode: %s" % type(exc).__name__)
    _check_keys(obj)
    try:
        return umsgpack.dumps(obj, True)
    except umsgpack.PackError as exc:
        raise FrameEncodeError("cannot encode: %s" % exc)


def encode_frame(obj, max_frame_bytes=STREAM_LIMIT_BYTES):
    body = encode_body(obj)
    if len(body) > max_frame_bytes:
        raise FrameEncodeError("frame body of %d bytes exceeds %d" % (len(body), max_frame_bytes))
    return struct.pack(">I", len(body)) + body


_REC_HEAD = b"\x82\xa1r"  # a rec frame's body: {"r": <fields>, "t": "rec"} (sorted keys)
_REC_TAIL = b"\xa1t\xa3rec"


def rec_fields(frame):
    """The packed record fields inside a `rec` frame made by `encode_frame({"t": "rec", "r": r})`
    (no other keys), or None for any other frame."""
    if frame[4:7] != _REC_HEAD or frame[-6:] != _REC_TAIL or len(frame) < 14:
        return None
    return frame[7:-6]


def _len_head(n, small, base):
    # msgpack length header: fix form (small > 0: limit), then 16-bit and 32-bit forms
    if n < small:
        return bytes((base | n,))
    if n < 0x10000:
        return bytes((0xDC if base == 0x90 else 0xC5,)) + struct.pack(">H", n)
    return bytes((0xDD if base == 0x90 else 0xC6,)) + struct.pack(">I", n)


def encode_recb(bodies):
    """A `recb` frame (record batch) from packed record fields, without packing them again:
    the same bytes as `encode_frame({"t": "recb", "b": bodies})`."""
    parts = [b"\x82\xa1b", _len_head(len(bodies), 16, 0x90)]
    for body in bodies:
        n = len(body)
        parts.append(bytes((0xC4, n)) if n < 0x100 else _len_head(n, 0, 0))
        parts.append(body)
    parts.append(b"\xa1t\xa4recb")
    payload = b"".join(parts)
    return struct.pack(">I", len(payload)) + payload


def _reject_ext(code, data):
    raise ValueError("ext type %d not allowed" % code)


def decode_body(body):
    """Decode one body; returns a dict or raises ValueError (never another error)."""
    if _msgpack is not None:
        try:
            obj = _msgpack.unpackb(bytes(body), raw=False, ext_hook=_reject_ext)
        except (ValueError, TypeError, _msgpack.UnpackException) as exc:
            raise ValueError("not msgpack: %s" % type(exc).__name__)
    else:
        try:
            obj = umsgpack.loads(body)
        except umsgpack.UnpackError as exc:
            raise ValueError("not msgpack: %s" % exc)
    if not isinstance(obj, dict):
        raise ValueError("body is a %s, not a map" % type(obj).__name__)
    return obj


class FrameDecoder:
    """Incremental decoder for one stream (one connection)."""

    def __init__(self, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
        if not isinstance(max_frame_bytes, int) or not 1 <= max_frame_bytes <= STREAM_LIMIT_BYTES:
            raise ValueError("max_frame_bytes must be 1..%d, got %r" % (STREAM_LIMIT_BYTES, max_frame_bytes))
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._skip = 0  # body bytes of a too-large frame still to discard
        self.lost = False
        self.buffered_bytes = 0

    def feed(self, data):
        if self.lost:
            return []
        items = []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        if self._buf:
            self._buf.extend(data)
            buf = self._buf
        else:  # nothing held back (the usual case): read `data` in place, keep only a tail
            buf = data
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_BYTES and not self._skip:
            length = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            if length > STREAM_LIMIT_BYTES:
                items.append(FrameError(FrameError.STREAM_LOST, length, "length over stream limit"))
                self.lost = True
                self._buf = bytearray()
                self.buffered_bytes = 0
                return items
            if length > self.max_frame_bytes:
                items.append(FrameError(FrameError.TOO_LARGE, length, "frame over max_frame_bytes"))
                available = end - pos - HEADER_BYTES
                if available >= length:
                    pos += HEADER_BYTES + length
                else:
                    self._skip = length - available
                    pos = end
                continue
            if end - pos - HEADER_BYTES < length:
                break
            body = buf[pos + HEADER_BYTES : pos + HEADER_BYTES + length]
            pos += HEADER_BYTES + length
            if length == 0:
                items.append(FrameError(FrameError.MALFORMED, 0, "empty body"))
                continue
            try:
                items.append(decode_body(body))
            except ValueError as exc:
                items.append(FrameError(FrameError.MALFORMED, length, str(exc)))
        if buf is self._buf:
            if pos:
                self._buf = bytearray(buf[pos:])
        elif pos < end:
            self._buf = bytearray(buf[pos:])
        self.buffered_bytes = len(self._buf)
        return items
