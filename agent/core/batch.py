"""The uplink's wire codec (DESIGN §5). Pure: bytes in, bytes out.

    payload = codec byte (0 none, 1 zlib, 2 zstd) ‖ compressed body
    body    = msgpack array [FORMAT, kids, cps, paths, shapes, rec_shapes, cols, raws]

The body carries whole checkpoints and their records, but not in their stored form:

- A checkpoint is sent as its signature, its forward-secure tag and a few small deltas.
  ``dev`` comes from the topic, ``root`` is rebuilt from the records, ``prev_cp`` from the
  hash of the previous checkpoint in the batch (sent only for the first), ``first``,
  ``last``, ``cp``, ``mono`` and ``wall`` as differences from what the previous
  checkpoint and records predict. Anything that does not fit (unknown fields, a message
  that does not rebuild byte-identically) is sent as its raw COSE bytes: ``[message, n]``.
- Records are flattened into (path, value) leaves, each record refers to a *shape* (its
  ordered list of paths) and the values go to one column per path: delta-coded when the
  column is integers, dictionary-coded when it repeats, plain otherwise. The encoder
  rebuilds every record and keeps the compact form only when the rebuilt bytes are
  identical; any other record travels raw (rec_shape -1).

The collector rebuilds byte-identical checkpoint messages and record bytes, and the chain
check (signature, Merkle root) proves it. ``decode`` takes limits on the payload size, the
decompressed size (zlib with ``max_length``; zstd only after checking the frame's declared
content size) and msgpack's lengths, and raises only ``BatchError``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import cbor2
import msgpack

from . import merkle
from .checkpoint import REASONS, parse
from .cose import COSE_SIGN1_TAG
from .errors import CheckpointMalformed, VeritrailError
from .keys import ALG_FROM_COSE, COSE_ALG
from .record import encode as encode_record, leaf_hash

_zstd: Any
try:  # optional on the device (extra "zstd"); the collector always has it
    import zstandard as _zstd
except ImportError:  # pragma: no cover - exercised on devices without the extra
    _zstd = None

CODEC_NONE, CODEC_ZLIB, CODEC_ZSTD = 0, 1, 2
CODEC_NAMES = {"none": CODEC_NONE, "zlib": CODEC_ZLIB, "zstd": CODEC_ZSTD}
FORMAT = 1
MAX_PAYLOAD_BYTES = 256 * 1024       # DESIGN §5: batches <= 256 KiB
MAX_BODY_BYTES = 4 * 1024 * 1024     # decompressed body; the encoder refuses more
MAX_ITEMS = 1 << 17                  # records, columns and checkpoints per batch
MAX_LEAF_BYTES = 64 * 1024           # one string/bytes value (= record.MAX_RECORD_BYTES)

_STD = frozenset({"v", "dev", "boot", "cp", "first", "last", "n", "root", "prev_cp", "kid", "fs",
                  "mono", "wall", "why"})
_ENC_PLAIN, _ENC_DICT, _ENC_DELTA, _ENC_OFFSET = 0, 1, 2, 3
# Paths every batch would otherwise spell out (DESIGN §2 fields); sent as their index.
# Append only: the index is part of format 1.
STATIC_PATHS: tuple[tuple[str, ...], ...] = (
    ("seq",), ("boot",), ("mono",), ("wall",), ("kind",), ("api",), ("src", "id"), ("src", "net"),
    ("src", "auth"), ("src", "kid"), ("sub",), ("st",), ("lat",), ("rq",), ("rs",), ("v",), ("r",), ("rb",), ("x",),
)
_STATIC_INDEX = {p: i for i, p in enumerate(STATIC_PATHS)}
_packer = msgpack.Packer(use_bin_type=True)


class BatchError(VeritrailError):
    """A batch that cannot be encoded or decoded. ``reason`` is a short stable text."""

    code = "batch"

    def __init__(self, reason: str) -> None:
        super().__init__(f"batch: {reason}")
        self.reason = reason


class BatchMalformed(BatchError):
    code = "malformed"


class BatchTooLarge(BatchError):
    code = "too_large"


class CodecUnavailable(BatchError):
    code = "codec_unavailable"


def available_codecs() -> list[str]:
    return ["none", "zlib"] + (["zstd"] if _zstd is not None else [])


def default_codec() -> int:
    """zstd when installed, else zlib (DESIGN §5)."""
    return CODEC_ZSTD if _zstd is not None else CODEC_ZLIB


# --- encoding -------------------------------------------------------------------------

def _flatten(value: dict, prefix: tuple, out: list) -> None:
    for key, item in value.items():
        path = prefix + (key,)
        if isinstance(item, dict) and item:
            _flatten(item, path, out)
        else:
            out.append((path, item))


def _unflatten(paths: Sequence[tuple], values: Sequence[Any]) -> dict:
    record: dict = {}
    for path, value in zip(paths, values):
        node = record
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise BatchMalformed("shape nests a value under a leaf")
        node[path[-1]] = value
    return record


def _rebuild_message(dev: str, fields: dict[str, Any], alg_code: int, kid: bytes, sig: bytes) -> bytes:
    payload = cbor2.dumps(fields | {"dev": dev}, canonical=True)
    protected = cbor2.dumps({1: alg_code, 4: kid}, canonical=True)
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, sig]))


def _size(obj: Any) -> float:
    try:
        return len(_packer.pack(obj))
    except (OverflowError, ValueError, TypeError):  # e.g. a delta outside msgpack's integer range
        return float("inf")


def _encode_column(values: list) -> list:
    if all(type(v) is int for v in values):
        deltas, prev = [], 0
        for v in values:
            deltas.append(v - prev)
            prev = v
        if _size(deltas) < _size(values):
            return [_ENC_DELTA, deltas]
        return [_ENC_PLAIN, values]
    keys = [_packer.pack(v) for v in values]
    index: dict[bytes, int] = {}
    uniques: list[Any] = []
    refs: list[int] = []
    for key, value in zip(keys, values):
        i = index.get(key)
        if i is None:
            i = index[key] = len(uniques)
            uniques.append(value)
        refs.append(i)
    if len(uniques) * 2 <= len(values):
        return [_ENC_DICT, [uniques, refs]]
    return [_ENC_PLAIN, values]


def _encode_columns(columns: list[list], paths: list[tuple], shapes: list[list[int]]) -> list[list]:
    """Each column on its own, except ``wall``-like integer columns that track an earlier one
    (same records, e.g. wall vs mono): those go as offsets from it, delta-coded."""
    members = [frozenset(s for s, shape in enumerate(shapes) if i in shape) for i in range(len(paths))]
    out = []
    for i, values in enumerate(columns):
        best = _encode_column(values)
        if all(type(v) is int for v in values):
            size = _size(best)
            for j in range(i):
                ref = columns[j]
                if members[j] == members[i] and len(ref) == len(values) and all(type(v) is int for v in ref):
                    offsets = _encode_column([v - r for v, r in zip(values, ref)])
                    cand = [_ENC_OFFSET, [j, offsets]]
                    if _size(cand) < size:
                        best, size = cand, _size(cand)
                    break
        out.append(best)
    return out


def _compress(body: bytes, codec: int, level: int | None) -> bytes:
    if codec == CODEC_NONE:
        return body
    if codec == CODEC_ZLIB:
        return zlib.compress(body, 9 if level is None else level)
    if codec == CODEC_ZSTD:
        if _zstd is None:
            raise CodecUnavailable("zstd is not installed")
        return _zstd.ZstdCompressor(level=19 if level is None else level, write_content_size=True).compress(body)
    raise CodecUnavailable(f"codec {codec}")


def encode(device_id: str, checkpoints: Sequence[tuple[bytes, Sequence[bytes]]], *,
           codec: int | None = None, level: int | None = None) -> bytes:
    """One batch from whole checkpoints (message, records) in cp order."""
    codec = default_codec() if codec is None else codec
    kids: list[list] = []
    kid_index: dict[tuple[bytes, int], int] = {}
    cps: list[Any] = []
    paths: list[tuple] = []
    path_index: dict[tuple, int] = {}
    shapes: list[list[int]] = []
    shape_index: dict[tuple[int, ...], int] = {}
    rec_shapes: list[int] = []
    columns: list[list] = []
    raws: list[bytes] = []
    want_cp, want_first, last_mono, last_wall = 0, 0, 0, 0
    prev_hash: bytes | None = None
    for message, records in checkpoints:
        for data in records:
            compact = _encode_record(data, paths, path_index, shapes, shape_index, columns)
            if compact is None:
                rec_shapes.append(-1)
                raws.append(bytes(data))
            else:
                rec_shapes.append(compact[0])
                mono, wall = compact[1]
                last_mono = mono if mono is not None else last_mono
                last_wall = wall if wall is not None else last_wall
        entry = _encode_checkpoint(device_id, message, records, kids, kid_index, prev_hash,
                                   want_cp, want_first, last_mono, last_wall)
        cps.append(entry)
        try:
            cp = parse(message)
            want_cp, want_first = cp.cp + 1, cp.last + 1
            last_mono = cp.mono if cp.mono is not None else last_mono
            last_wall = cp.wall if cp.wall is not None else last_wall
            prev_hash = cp.hash
        except CheckpointMalformed:
            prev_hash = None
    cols = _encode_columns(columns, paths, shapes)
    wire_paths = [_STATIC_INDEX.get(p, list(p)) for p in paths]
    body = _packer.pack([FORMAT, kids, cps, wire_paths, shapes, rec_shapes, cols, raws])
    if len(body) > MAX_BODY_BYTES:
        raise BatchTooLarge(f"body of {len(body)} bytes, limit {MAX_BODY_BYTES}")
    return bytes([codec]) + _compress(body, codec, level)


def _encode_record(data: bytes, paths: list, path_index: dict, shapes: list, shape_index: dict,
                   columns: list) -> tuple[int, tuple[Any, Any]] | None:
    try:
        rec = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData, RecursionError):
        return None
    if not isinstance(rec, dict):
        return None
    leaves: list = []
    _flatten(rec, (), leaves)
    try:
        if encode_record(_unflatten([p for p, _ in leaves], [v for _, v in leaves])) != data:
            return None
    except (VeritrailError, TypeError, ValueError):
        return None
    ids = []
    for path, _ in leaves:
        i = path_index.get(path)
        if i is None:
            i = path_index[path] = len(paths)
            paths.append(path)
            columns.append([])
        ids.append(i)
    key = tuple(ids)
    s = shape_index.get(key)
    if s is None:
        s = shape_index[key] = len(shapes)
        shapes.append(ids)
    for i, (_, value) in zip(ids, leaves):
        columns[i].append(value)
    mono, wall = rec.get("mono"), rec.get("wall")
    return s, (mono if type(mono) is int else None, wall if type(wall) is int else None)


def _encode_checkpoint(device_id: str, message: bytes, records: Sequence[bytes], kids: list,
                       kid_index: dict, prev_hash: bytes | None, want_cp: int, want_first: int,
                       last_mono: int, last_wall: int) -> list:
    raw = [bytes(message), len(records)]
    try:
        cp = parse(message)
    except CheckpointMalformed:
        return raw
    payload = cbor2.loads(cp.sign1.payload)
    if (cp.dev != device_id or cp.n != len(records) or not isinstance(payload, dict)
            or cp.mono is None or cp.wall is None or cp.why is None):
        return raw
    extra = {k: v for k, v in payload.items() if k not in _STD} or None
    kid = bytes.fromhex(cp.kid)
    key = (kid, COSE_ALG[cp.sign1.alg])
    k = kid_index.get(key)
    if k is None:
        k = kid_index[key] = len(kids)
        kids.append(list(key))
    why: int | str = REASONS.index(cp.why) if cp.why in REASONS else cp.why
    entry = [cp.boot, cp.cp - want_cp, cp.first - want_first, cp.n, cp.mono - last_mono,
             cp.wall - last_wall, why, k, cp.fs, cp.sign1.signature,
             None if prev_hash == cp.prev_cp else cp.prev_cp, extra]
    try:
        rebuilt = _decode_checkpoint(device_id, entry, kids, prev_hash, want_cp, want_first,
                                     last_mono, last_wall, merkle.root([leaf_hash(r) for r in records]))
    except BatchError:
        return raw
    return entry if rebuilt == cp.message else raw


# --- decoding -------------------------------------------------------------------------

def _decompress(payload: bytes, max_body_bytes: int) -> bytes:
    codec, data = payload[0], payload[1:]
    if codec == CODEC_NONE:
        body = data
    elif codec == CODEC_ZLIB:
        d = zlib.decompressobj()
        try:
            body = d.decompress(data, max_body_bytes + 1)
        except zlib.error:
            raise BatchMalformed("zlib stream is corrupt") from None
        if len(body) > max_body_bytes or d.unconsumed_tail:
            raise BatchTooLarge(f"decompresses to more than {max_body_bytes} bytes")
        if not d.eof or d.unused_data:
            raise BatchMalformed("zlib stream truncated or followed by garbage")
    elif codec == CODEC_ZSTD:
        if _zstd is None:
            raise CodecUnavailable("zstd is not installed")
        try:
            declared = _zstd.frame_content_size(data)
        except _zstd.ZstdError:
            raise BatchMalformed("not a zstd frame") from None
        if declared < 0:  # unknown size: never trust it, we always write it
            raise BatchMalformed("zstd frame without a content size")
        if declared > max_body_bytes:
            raise BatchTooLarge(f"declares {declared} bytes, limit {max_body_bytes}")
        try:
            body = _zstd.ZstdDecompressor().decompress(data, max_output_size=max_body_bytes)
        except _zstd.ZstdError:
            raise BatchMalformed("zstd stream is corrupt") from None
        if len(body) != declared:
            raise BatchMalformed("zstd content size mismatch")
    else:
        raise BatchMalformed(f"unknown codec byte {codec}")
    if len(body) > max_body_bytes:
        raise BatchTooLarge(f"body of {len(body)} bytes, limit {max_body_bytes}")
    return body


def _int(value: Any, what: str, lo: int | None = None) -> int:
    if type(value) is not int or (lo is not None and value < lo):
        raise BatchMalformed(f"{what} must be an integer" + (f" >= {lo}" if lo is not None else ""))
    return value


def _decode_checkpoint(dev: str, entry: list, kids: list, prev_hash: bytes | None, want_cp: int,
                       want_first: int, last_mono: int, last_wall: int, root: bytes) -> bytes:
    if len(entry) != 12:
        raise BatchMalformed("checkpoint entry has the wrong length")
    boot, dcp, dfirst, n, dmono, dwall, why, k, fs, sig, prev, extra = entry
    for name, value in (("boot", boot), ("cp", dcp), ("first", dfirst), ("n", n), ("mono", dmono), ("wall", dwall)):
        _int(value, name)
    if not (type(k) is int and 0 <= k < len(kids)):
        raise BatchMalformed("kid index out of range")
    if type(why) is int:
        if not 0 <= why < len(REASONS):
            raise BatchMalformed("unknown reason code")
        why = REASONS[why]
    if not (isinstance(why, str) and isinstance(fs, bytes) and isinstance(sig, bytes)):
        raise BatchMalformed("bad checkpoint field types")
    if prev is None:
        if prev_hash is None:
            raise BatchMalformed("first checkpoint without prev_cp")
        prev = prev_hash
    if not isinstance(prev, bytes) or not (extra is None or isinstance(extra, dict)):
        raise BatchMalformed("bad prev_cp or extra")
    kid, alg_code = kids[k]
    first = want_first + dfirst
    fields: dict[str, Any] = dict(extra or {})
    fields.update({"v": FORMAT, "boot": boot, "cp": want_cp + dcp, "first": first, "last": first + n - 1,
                   "n": n, "root": root, "prev_cp": prev, "kid": kid.hex(), "fs": fs,
                   "mono": last_mono + dmono, "wall": last_wall + dwall, "why": why})
    try:
        return _rebuild_message(dev, fields, alg_code, kid, sig)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise BatchMalformed(f"checkpoint does not encode: {type(exc).__name__}") from None


def _decode_column(col: Any, count: int) -> list:
    if not (isinstance(col, list) and len(col) == 2 and type(col[0]) is int):
        raise BatchMalformed("bad column")
    enc, data = col
    if enc == _ENC_PLAIN:
        values = data
    elif enc == _ENC_DELTA:
        if not isinstance(data, list):
            raise BatchMalformed("bad delta column")
        values, acc = [], 0
        for d in data:
            acc += _int(d, "delta")
            values.append(acc)
    elif enc == _ENC_DICT:
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], list) and isinstance(data[1], list)):
            raise BatchMalformed("bad dictionary column")
        uniques, refs = data
        if not all(type(r) is int and 0 <= r < len(uniques) for r in refs):
            raise BatchMalformed("dictionary reference out of range")
        values = [uniques[r] for r in refs]
    else:
        raise BatchMalformed(f"unknown column encoding {enc}")
    if not isinstance(values, list) or len(values) != count:
        raise BatchMalformed("column length does not match its shapes")
    return values


def _unpack(body: bytes) -> list:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, max_str_len=MAX_LEAF_BYTES,
                              max_bin_len=MAX_LEAF_BYTES, max_array_len=MAX_ITEMS, max_map_len=4096,
                              max_ext_len=0, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData, RecursionError) as exc:
        raise BatchMalformed(f"body msgpack: {type(exc).__name__}") from None
    if not (isinstance(obj, list) and len(obj) == 8 and obj[0] == FORMAT):
        raise BatchMalformed("not a version-1 batch body")
    if not all(isinstance(part, list) for part in obj[1:]):
        raise BatchMalformed("batch parts must be arrays")
    return obj


def decode(device_id: str, payload: bytes, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES,
           max_body_bytes: int = MAX_BODY_BYTES) -> list[tuple[bytes, list[bytes]]]:
    """The (checkpoint message, record bytes) pairs of a batch; raises only BatchError."""
    if not isinstance(payload, (bytes, bytearray)):
        raise BatchMalformed("not bytes")
    if len(payload) > max_payload_bytes:
        raise BatchTooLarge(f"payload of {len(payload)} bytes, limit {max_payload_bytes}")
    if len(payload) < 2:
        raise BatchMalformed("empty payload")
    _, kids, cps, raw_paths, shapes, rec_shapes, cols, raws = _unpack(_decompress(bytes(payload), max_body_bytes))
    try:
        return _assemble(device_id, kids, cps, raw_paths, shapes, rec_shapes, cols, raws)
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError, VeritrailError) as exc:
        if isinstance(exc, BatchError):
            raise
        raise BatchMalformed(f"inconsistent body: {type(exc).__name__}") from None


def _assemble(dev: str, kids: list, cps: list, raw_paths: list, shapes: list, rec_shapes: list,
              cols: list, raws: list) -> list[tuple[bytes, list[bytes]]]:
    for kid in kids:
        if not (isinstance(kid, list) and len(kid) == 2 and isinstance(kid[0], bytes)
                and 1 <= len(kid[0]) <= 32 and kid[1] in ALG_FROM_COSE):
            raise BatchMalformed("bad key table")
    paths = []
    for p in raw_paths:
        if type(p) is int and 0 <= p < len(STATIC_PATHS):
            paths.append(STATIC_PATHS[p])
        elif isinstance(p, list) and p and all(isinstance(k, (str, bytes)) for k in p):
            paths.append(tuple(p))
        else:
            raise BatchMalformed("bad path")
    counts = [0] * len(paths)
    for shape in shapes:
        if not (isinstance(shape, list) and shape and all(type(i) is int and 0 <= i < len(paths) for i in shape)):
            raise BatchMalformed("bad shape")
    for s in rec_shapes:
        if type(s) is not int or not -1 <= s < len(shapes):
            raise BatchMalformed("bad record shape reference")
        if s >= 0:
            for i in shapes[s]:
                counts[i] += 1
    if len(cols) != len(paths):
        raise BatchMalformed("column count does not match paths")
    values: list[list] = []
    for c, n in zip(cols, counts):
        if isinstance(c, list) and len(c) == 2 and c[0] == _ENC_OFFSET:
            if not (isinstance(c[1], list) and len(c[1]) == 2 and type(c[1][0]) is int and 0 <= c[1][0] < len(values)):
                raise BatchMalformed("bad offset column")
            ref, offsets = values[c[1][0]], _decode_column(c[1][1], n)
            if len(ref) != n or not all(type(v) is int for v in ref + offsets):
                raise BatchMalformed("offset column does not match its reference")
            values.append([r + o for r, o in zip(ref, offsets)])
        else:
            values.append(_decode_column(c, n))
    if sum(1 for s in rec_shapes if s < 0) != len(raws) or not all(isinstance(r, bytes) for r in raws):
        raise BatchMalformed("raw record count mismatch")
    cursor = [0] * len(paths)
    raw_iter = iter(raws)
    records: list[bytes] = []
    monos: list[tuple[int | None, int | None]] = []
    for s in rec_shapes:
        if s < 0:
            records.append(next(raw_iter))
            monos.append((None, None))
            continue
        ids = shapes[s]
        leaf_values = []
        for i in ids:
            leaf_values.append(values[i][cursor[i]])
            cursor[i] += 1
        rec = _unflatten([paths[i] for i in ids], leaf_values)
        records.append(encode_record(rec))
        mono, wall = rec.get("mono"), rec.get("wall")
        monos.append((mono if type(mono) is int else None, wall if type(wall) is int else None))
    out: list[tuple[bytes, list[bytes]]] = []
    pos, want_cp, want_first, last_mono, last_wall = 0, 0, 0, 0, 0
    prev_hash: bytes | None = None
    for entry in cps:
        if not isinstance(entry, list) or not entry:
            raise BatchMalformed("bad checkpoint entry")
        n = _int(entry[1] if isinstance(entry[0], bytes) else entry[3], "n", 0)
        if pos + n > len(records):
            raise BatchMalformed("more records claimed than sent")
        recs = records[pos:pos + n]
        for mono, wall in monos[pos:pos + n]:
            last_mono = mono if mono is not None else last_mono
            last_wall = wall if wall is not None else last_wall
        pos += n
        if isinstance(entry[0], bytes):
            if len(entry) != 2:
                raise BatchMalformed("bad raw checkpoint entry")
            message = entry[0]
        else:
            message = _decode_checkpoint(dev, entry, kids, prev_hash, want_cp, want_first, last_mono,
                                         last_wall, merkle.root([leaf_hash(r) for r in recs]))
        out.append((message, recs))
        try:
            cp = parse(message)
        except CheckpointMalformed:  # left for the verifier to report with its cp number
            prev_hash = None
            continue
        want_cp, want_first, prev_hash = cp.cp + 1, cp.last + 1, cp.hash
        last_mono = cp.mono if cp.mono is not None else last_mono
        last_wall = cp.wall if cp.wall is not None else last_wall
    if pos != len(records):
        raise BatchMalformed("records left over after the last checkpoint")
    return out
