"""A small msgpack codec that runs on MicroPython and CPython.

`dumps(obj)` produces the same bytes as ``msgpack.packb(obj, use_bin_type=True)`` for every
type the shim sends: None, bool, int (-2**63 .. 2**64-1), float (always float64, as the
`msgpack` package does by default), str, bytes/bytearray, list/tuple and dict (in the
dict's own iteration order). `loads(data)` reads everything `dumps` writes plus float32,
and rejects ext types, non-str/bytes map keys being fine but unhashable keys not.

Portable: no typing at run time, no f-strings with `=`, no dataclasses. Errors are
`ValueError` subclasses so callers on both implementations can catch one thing:

    PackError(ValueError)     value cannot be encoded (type or range)
    UnpackError(ValueError)   bytes are not valid msgpack for our subset
"""

import struct

__all__ = ["dumps", "loads", "PackError", "UnpackError"]

_MAX_DEPTH = 64


class PackError(ValueError):
    pass


class UnpackError(ValueError):
    pass


def dumps(obj, sort_keys=False):
    """Encode `obj`. With `sort_keys`, every map is written in sorted key order, which
    makes the bytes independent of dict iteration order (MicroPython's dicts do not keep
    insertion order); keys of one map must then be all str or all bytes."""
    out = []  # type: list[bytes]
    _pack(obj, out, 0, sort_keys)
    return b"".join(out)


def _pack(obj, out, depth, sort_keys):
    if depth > _MAX_DEPTH:
        raise PackError("nesting deeper than %d" % _MAX_DEPTH)
    # bool before int: on CPython bool is an int subclass (on MicroPython it is not).
    if obj is None:
        out.append(b"\xc0")
    elif obj is True:
        out.append(b"\xc3")
    elif obj is False:
        out.append(b"\xc2")
    elif isinstance(obj, int):
        out.append(_pack_int(obj))
    elif isinstance(obj, float):
        out.append(b"\xcb" + struct.pack(">d", obj))
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        n = len(raw)
        if n < 32:
            out.append(bytes((0xA0 | n,)))
        elif n < 0x100:
            out.append(bytes((0xD9, n)))
        elif n < 0x10000:
            out.append(b"\xda" + struct.pack(">H", n))
        elif n < 0x100000000:
            out.append(b"\xdb" + struct.pack(">I", n))
        else:
            raise PackError("str too long")
        out.append(raw)
    elif isinstance(obj, (bytes, bytearray)):
        n = len(obj)
        if n < 0x100:
            out.append(bytes((0xC4, n)))
        elif n < 0x10000:
            out.append(b"\xc5" + struct.pack(">H", n))
        elif n < 0x100000000:
            out.append(b"\xc6" + struct.pack(">I", n))
        else:
            raise PackError("bytes too long")
        out.append(bytes(obj))
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        out.append(_header(n, 0x90, b"\xdc", b"\xdd"))
        for item in obj:
            _pack(item, out, depth + 1, sort_keys)
    elif isinstance(obj, dict):
        n = len(obj)
        out.append(_header(n, 0x80, b"\xde", b"\xdf"))
        if sort_keys:
            try:
                keys = sorted(obj)
            except TypeError:
                raise PackError("map keys of mixed types cannot be sorted")
        else:
            keys = list(obj)
        for key in keys:
            _pack(key, out, depth + 1, sort_keys)
            _pack(obj[key], out, depth + 1, sort_keys)
    else:
        raise PackError("cannot encode type %s" % type(obj).__name__)


def _header(n, fix, code16, code32):
    if n < 16:
        return bytes((fix | n,))
    if n < 0x10000:
        return code16 + struct.pack(">H", n)
    if n < 0x100000000:
        return code32 + struct.pack(">I", n)
    raise PackError("container too long")


def _pack_int(n):
    # Same choice of format as the msgpack package: unsigned formats for n >= 0.
    if n >= 0:
        if n < 0x80:
            return bytes((n,))
        if n < 0x100:
            return bytes((0xCC, n))
        if n < 0x10000:
            return b"\xcd" + struct.pack(">H", n)
        if n < 0x100000000:
            return b"\xce" + struct.pack(">I", n)
        if n < 0x10000000000000000:
            # struct "Q" is unreliable for n >= 2**63 on some MicroPython ports.
            return b"\xcf" + struct.pack(">II", n >> 32, n & 0xFFFFFFFF)
        raise PackError("int out of range")
    if n >= -32:
        return bytes((n & 0xFF,))
    if n >= -0x80:
        return b"\xd0" + struct.pack(">b", n)
    if n >= -0x8000:
        return b"\xd1" + struct.pack(">h", n)
    if n >= -0x80000000:
        return b"\xd2" + struct.pack(">i", n)
    if n >= -0x8000000000000000:
        u = n + 0x10000000000000000
        return b"\xd3" + struct.pack(">II", u >> 32, u & 0xFFFFFFFF)
    raise PackError("int out of range")


def loads(data):
    """Decode exactly one msgpack object filling all of `data`."""
    reader = _Reader(data)
    obj = reader.read(0)
    if reader.pos != len(reader.buf):
        raise UnpackError("%d trailing bytes" % (len(reader.buf) - reader.pos))
    return obj


class _Reader:
    def __init__(self, data):
        self.buf = bytes(data)
        self.pos = 0

    def take(self, n):
        start = self.pos
        end = start + n
        if end > len(self.buf):
            raise UnpackError("truncated")
        self.pos = end
        return self.buf[start:end]

    def unsigned(self, size):
        raw = self.take(size)
        value = 0
        for b in raw:
            value = (value << 8) | b
        return value

    def signed(self, size):
        value = self.unsigned(size)
        if value >= 1 << (8 * size - 1):
            value -= 1 << (8 * size)
        return value

    def text(self, n):
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeError:
            raise UnpackError("invalid utf-8 in str")

    def read(self, depth):
        if depth > _MAX_DEPTH:
            raise UnpackError("nesting deeper than %d" % _MAX_DEPTH)
        code = self.take(1)[0]
        if code < 0x80:
            return code
        if code >= 0xE0:
            return code - 0x100
        if 0xA0 <= code <= 0xBF:
            return self.text(code & 0x1F)
        if 0x90 <= code <= 0x9F:
            return self.array(code & 0x0F, depth)
        if 0x80 <= code <= 0x8F:
            return self.map(code & 0x0F, depth)
        if code == 0xC0:
            return None
        if code == 0xC2:
            return False
        if code == 0xC3:
            return True
        if 0xC4 <= code <= 0xC6:
            return self.take(self.unsigned(1 << (code - 0xC4)))
        if code == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if code == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if 0xCC <= code <= 0xCF:
            return self.unsigned(1 << (code - 0xCC))
        if 0xD0 <= code <= 0xD3:
            return self.signed(1 << (code - 0xD0))
        if 0xD9 <= code <= 0xDB:
            return self.text(self.unsigned(1 << (code - 0xD9)))
        if code == 0xDC:
            return self.array(self.unsigned(2), depth)
        if code == 0xDD:
            return self.array(self.unsigned(4), depth)
        if code == 0xDE:
            return self.map(self.unsigned(2), depth)
        if code == 0xDF:
            return self.map(self.unsigned(4), depth)
        raise UnpackError("unsupported msgpack code 0x%02x" % code)

    def array(self, n, depth):
        if n > len(self.buf) - self.pos:  # every element takes at least one byte
            raise UnpackError("truncated")
        return [self.read(depth + 1) for _ in range(n)]

    def map(self, n, depth):
        if 2 * n > len(self.buf) - self.pos:
            raise UnpackError("truncated")
        out = {}
        for _ in range(n):
            key = self.read(depth + 1)
            if not isinstance(key, (str, bytes)):
                raise UnpackError("map key must be str or bytes")
            out[key] = self.read(depth + 1)
        return out
