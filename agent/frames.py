"""The agent's reader and writer for frames of ``firmware_shim.framing`` (docs/protocol.md),
and the checks of the record fields a shim sends in them (``rec`` and ``recb`` frames).

Same format and same results as the portable ``FrameDecoder`` (decoded maps, or
``FrameError`` markers), without importing the shim package (its import costs the daemon
~1.3 MiB of RSS); tests/agent/test_frames.py checks both give the same items for any bytes
cut at any points. (One module, not two: each module the daemon imports costs RSS.)

The field checks are fast, because they run for every record: the hot path asks
``clean(r)`` (C-level steps), and only a record that fails it goes through
``sanitize``/``check``, which name the problem. ``split_recb`` turns a ``recb`` frame's
items (each one record's fields, packed by the sender) into bodies the Sealer can splice
as they are (``Sealer.append_raw_batch``).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

STREAM_LIMIT_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
_packb = msgpack.Packer(use_bin_type=True).pack


def encode_frame(obj: dict[str, Any]) -> bytes:
    """One reply frame: 4-byte big-endian length ‖ msgpack map."""
    body = _packb(obj)
    return _HEADER.pack(len(body)) + body


class FrameError:
    """A frame that could not be decoded (same codes as firmware_shim.framing.FrameError)."""

    __slots__ = ("code", "size", "detail")
    TOO_LARGE, MALFORMED, STREAM_LOST = "too_large", "malformed", "stream_lost"

    def __init__(self, code: str, size: int, detail: str) -> None:
        self.code, self.size, self.detail = code, size, detail

    @property
    def fatal(self) -> bool:
        return self.code == FrameError.STREAM_LOST

    def __repr__(self) -> str:
        return f"FrameError({self.code!r}, size={self.size}, detail={self.detail!r})"


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError("ext type not allowed")


class FrameReader:
    """About twice as fast as the portable ``FrameDecoder``: it slices the received bytes
    directly. (Feeding a whole read to one ``msgpack.Unpacker`` instead was measured: the
    same instructions per frame, as building the objects dominates.)"""

    __slots__ = ("max_frame_bytes", "_buf", "_skip", "lost")

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf: bytes | bytearray = b""
        self._skip = 0
        self.lost = False

    def feed(self, data: bytes | bytearray) -> list[Any]:
        if self.lost:
            return []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        buf = self._buf + data if self._buf else data
        items: list[Any] = []
        pos, end, limit = 0, len(buf), self.max_frame_bytes
        hdr, unpackb = _HEADER.unpack_from, msgpack.unpackb
        while end - pos >= 4:
            (length,) = hdr(buf, pos)
            stop = pos + 4 + length
            if length > limit or length == 0:
                if length > STREAM_LIMIT_BYTES:
                    items.append(FrameError(FrameError.STREAM_LOST, length, "length over stream limit"))
                    self.lost, self._buf = True, b""
                    return items
                if length == 0:
                    items.append(FrameError(FrameError.MALFORMED, 0, "empty body"))
                    pos = stop
                    continue
                items.append(FrameError(FrameError.TOO_LARGE, length, "frame over max_frame_bytes"))
                if stop > end:
                    self._skip, pos = stop - end, end
                    break
                pos = stop
                continue
            if stop > end:
                break
            try:
                # max_ext_len=0: no ext type at all; msgpack decodes timestamps (ext -1) without
                # calling ext_hook, and a record carrying one would be sealed but never verify
                obj = unpackb(buf[pos + 4:stop], ext_hook=_reject_ext, max_ext_len=0)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                obj = FrameError(FrameError.MALFORMED, length, "not msgpack: " + type(exc).__name__)
            else:
                if type(obj) is not dict:
                    obj = FrameError(FrameError.MALFORMED, length, f"body is a {type(obj).__name__}, not a map")
            items.append(obj)
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return items


# --- record fields ----------------------------------------------------------------------
# Fields the agent sets; a shim that sends them has them kept under x.shim_<key>.
AGENT_SET = frozenset({"seq", "boot", "mono", "wall", "kind", "v", "r", "rb"})
SHIM_KINDS = ("api", "state")
_FIELD_TYPES: dict[str, type] = {"lat": int, "rq": int, "rs": int, "api": str, "sub": str, "src": dict, "x": dict}
_TYPE_TEXT = {int: "an unsigned integer", str: "a string", dict: "a map"}


def check(r: dict[str, Any]) -> str | None:
    """Field types of DESIGN §2 (as ``agent.core.record.validate``, for decoded msgpack).
    Returns a short problem text or None."""
    types = _FIELD_TYPES
    for name, value in r.items():
        want = types.get(name)
        if want is not None:
            if type(value) is not want:
                return f"field {name}: must be {_TYPE_TEXT[want]}"
            if want is int and value < 0:  # type: ignore[operator]  # type(value) is int, checked above
                return f"field {name}: must be an unsigned integer"
        elif name == "st" and type(value) is not int and type(value) is not str:
            return "field st: must be an integer or a string"
    return None


# The hot path's check of a decoded record, in C-level steps: no (field, type) pair of the
# record may be in _REFUSED (a wrong type for a known field, or any agent-set field), and the
# unsigned fields must not be negative. msgpack decoding (ext types refused) only yields the
# types below, so _REFUSED lists every wrong one; a record that fails goes through
# sanitize()/check(), which name the problem (tests/agent/test_recb.py pins that both agree).
_DECODED_TYPES = (type(None), bool, int, float, str, bytes, list, dict, msgpack.Timestamp)
_REFUSED = frozenset(
    [(name, t) for name, want in _FIELD_TYPES.items() for t in _DECODED_TYPES if t is not want]
    + [("st", t) for t in _DECODED_TYPES if t is not int and t is not str]
    + [(name, t) for name in AGENT_SET for t in _DECODED_TYPES])


def clean(r: dict[str, Any]) -> bool:
    """True when ``r`` needs neither sanitising nor a refusal (same answer as check() for
    decoded records without agent-set fields; False for any record with one)."""
    if not _REFUSED.isdisjoint(zip(r, map(type, r.values()))):
        return False
    get = r.get
    return get("lat", 0) >= 0 and get("rq", 0) >= 0 and get("rs", 0) >= 0


def needs_sanitize(r: dict[str, Any]) -> bool:
    """True when ``r`` carries an agent-set field other than a shim kind (api/state)."""
    return any(key != "kind" or r[key] not in SHIM_KINDS for key in AGENT_SET.intersection(r))


def sanitize(r: dict[str, Any]) -> dict[str, Any]:
    """Move agent-set fields the shim sent into x.shim_<key> (kind api/state is the shim's to set)."""
    out: dict[str, Any] = {}
    moved: dict[str, Any] = {}
    for key, value in r.items():
        if key in AGENT_SET and not (key == "kind" and value in SHIM_KINDS):
            moved["shim_" + key] = value
        else:
            out[key] = value
    if not moved:  # only a shim kind: nothing to keep aside (no empty x added)
        return out
    x = out.get("x")
    if x is None:
        out["x"] = moved
    elif isinstance(x, dict):
        out["x"] = {**x, **moved}
    return out  # a non-map x is refused by check()


# --- recb items ------------------------------------------------------------------------
# Limits as agent.core.record.decode's, so that every record kept decodes again when it is
# verified (a map leaves room for the 5 header fields; ext types, timestamps included, are
# refused: record.decode refuses them).
_ITEM_LIMITS = {"max_ext_len": 0, "max_array_len": 4096, "max_map_len": 4096 - 5}


def _map_len(b: bytes) -> int:
    b0 = b[0]
    if 0x80 <= b0 <= 0x8F:
        return b0 - 0x80
    if b0 == 0xDE:
        return int.from_bytes(b[1:3], "big")
    return int.from_bytes(b[1:5], "big")  # 0xDF: a decoded dict's body is one of the three


class _Undecodable:
    __slots__ = ("msg",)

    def __init__(self, msg: str) -> None:
        self.msg = msg


def _decode_all(bins: list[Any]) -> list[Any] | None:
    """The items decoded by one Unpacker over their concatenation (cheaper than a call per
    item), or None unless every item is exactly one msgpack object: after each item the
    Unpacker must stand exactly at that item's end, so no object ever spans two items."""
    try:
        joined = b"".join(bins)
    except TypeError:  # an item that is not a bin
        return None
    up = msgpack.Unpacker(max_buffer_size=max(len(joined), 1), **_ITEM_LIMITS)
    up.feed(joined)
    unpack, tell = up.unpack, up.tell
    out: list[Any] = []
    add, end = out.append, 0
    try:
        for b in bins:
            add(unpack())
            end += len(b)
            if tell() != end:
                return None
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return out


def _decode_each(bins: list[Any]) -> list[Any]:
    out: list[Any] = []
    for b in bins:
        try:
            out.append(msgpack.unpackb(b, **_ITEM_LIMITS))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            out.append(_Undecodable(("not msgpack: " + type(exc).__name__) if type(b) is bytes else "not a bin"))
    return out


def split_recb(bins: list[Any]) -> tuple[list[bytes], list[str | None], list[dict[str, Any]], list[tuple[int, str]]]:
    """A ``recb`` frame's items → (bodies, kinds, records, problems).

    Each item must be the packed map of one record's fields. It is decoded and checked as a
    ``rec`` frame's ``r`` is; when it needed no change (no agent-set field, kind absent or
    api/state, no key twice) its own bytes are the body and its kind None (absent: the Sealer
    appends ``kind: "api"``) or the kind it carries; otherwise the changed fields are packed
    again (the ``rec`` path's bytes exactly). ``records`` are the decoded fields for the
    rules (observe; a record without ``kind`` is an api record). ``problems`` are (item
    index, short text); those items are left out, the others kept.
    """
    decoded = _decode_all(bins)
    if decoded is None:
        decoded = _decode_each(bins)
    else:  # the usual case: every item fine as sent (clean(), inlined, and no key twice)
        fine, get = _REFUSED.isdisjoint, dict.get
        for b, r in zip(bins, decoded):
            if (type(r) is not dict or not fine(zip(r, map(type, r.values())))
                    or get(r, "lat", 0) < 0 or get(r, "rq", 0) < 0 or get(r, "rs", 0) < 0
                    or (b[0] - 0x80 != len(r) and _map_len(b) != len(r))):
                break
        else:
            return bins, [None] * len(bins), decoded, []
    is_clean = clean
    bodies: list[bytes] = []
    kinds: list[str | None] = []
    records: list[dict[str, Any]] = []
    add_body, add_kind, add_record = bodies.append, kinds.append, records.append
    problems: list[tuple[int, str]] = []
    for i, (b, r) in enumerate(zip(bins, decoded)):
        if type(r) is dict and is_clean(r) and (b[0] - 0x80 == len(r) or _map_len(b) == len(r)):
            add_body(b)  # the sender's bytes as they are
            add_kind(None)
            add_record(r)
            continue
        if type(r) is not dict:
            problems.append((i, r.msg if type(r) is _Undecodable else f"record is a {type(r).__name__}, not a map"))
            continue
        moves = not AGENT_SET.isdisjoint(r) and needs_sanitize(r)
        changed = moves or _map_len(b) != len(r)  # a key twice: keep what decoding kept, packed again
        fields = sanitize(r) if moves else r
        kind = fields.get("kind")  # after sanitize: absent, "api" or "state"
        if kind is None:
            fields["kind"] = "api"
        bad = check(fields)
        if bad is not None:
            problems.append((i, bad))
            continue
        if changed:
            add_body(_packb(fields))
            add_kind(fields["kind"])
        else:
            add_body(b)
            add_kind(kind)
        add_record(fields)
    return bodies, kinds, records, problems
