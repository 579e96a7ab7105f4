"""Records: one msgpack map each, whose bytes are fixed when written (DESIGN §2).

The bytes are what is hashed, stored and verified. ``encode`` is ``msgpack.packb`` with
``use_bin_type=True``; msgpack always picks the shortest form, so a decoded record
re-encodes to the same bytes as long as it was written by ``encode`` (``is_canonical``
tells). Unknown keys are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgpack

from .errors import RecordInvalid, RecordMalformed

# Field names (DESIGN §2). One place; everything else imports these.
SEQ, BOOT, MONO, WALL, KIND = "seq", "boot", "mono", "wall", "kind"
API, SRC, SUB, ST, LAT, RQ, RS = "api", "src", "sub", "st", "lat", "rq", "rs"
VERDICT, RULES, EXTRA = "v", "r", "x"
RULE_BUNDLE = "rb"  # rule bundle version that judged a `cmd` (docs/protocol.md)

KINDS = frozenset({"api", "cmd", "alert", "state", "agent"})
SECURITY_KINDS = frozenset({"cmd", "alert", "agent"})
VERDICTS = frozenset({"allow", "alert", "block", "defer"})

# Agent-set header fields, in the order the ledger writes them.
HEADER = (SEQ, BOOT, MONO, WALL, KIND)

MAX_RECORD_BYTES = 64 * 1024

_UINT_FIELDS = (SEQ, BOOT, MONO, WALL, LAT, RQ, RS)
_STR_FIELDS = (API, SUB)
_packer = msgpack.Packer(use_bin_type=True)


def encode(record: Mapping[str, Any]) -> bytes:
    """Bytes of a record. Raises RecordInvalid for values msgpack cannot carry."""
    try:
        return _packer.pack(record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordInvalid("*", f"not encodable: {type(exc).__name__}") from None


def decode(data: bytes) -> dict[str, Any]:
    """Parse record bytes with limits; raises RecordMalformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RecordMalformed("not bytes")
    if len(data) > MAX_RECORD_BYTES:
        raise RecordMalformed(f"{len(data)} bytes, limit {MAX_RECORD_BYTES}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_RECORD_BYTES,
            max_bin_len=MAX_RECORD_BYTES,
            max_array_len=4096,
            max_map_len=4096,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RecordMalformed(type(exc).__name__) from None
    except RecursionError:
        raise RecordMalformed("nesting too deep") from None
    if not isinstance(obj, dict):
        raise RecordMalformed("not a map")
    for key in obj:
        if not isinstance(key, str):
            raise RecordMalformed("non-string key")
    return obj


def validate(record: Mapping[str, Any]) -> None:
    """Check the known fields' types (DESIGN §2); unknown keys pass. Raises RecordInvalid."""
    for name in _UINT_FIELDS:
        value = record.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise RecordInvalid(name, "must be an unsigned integer")
    for name in _STR_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise RecordInvalid(name, "must be a string")
    kind = record.get(KIND)
    if kind is not None and kind not in KINDS:
        raise RecordInvalid(KIND, f"must be one of {sorted(KINDS)}")
    st = record.get(ST)
    if st is not None and not isinstance(st, (int, str)):
        raise RecordInvalid(ST, "must be an integer or a string")
    for name in (SRC, EXTRA):
        value = record.get(name)
        if value is not None and not isinstance(value, Mapping):
            raise RecordInvalid(name, "must be a map")
    verdict = record.get(VERDICT)
    if verdict is not None and verdict not in VERDICTS:
        raise RecordInvalid(VERDICT, f"must be one of {sorted(VERDICTS)}")
    rules = record.get(RULES)
    if rules is not None and not (isinstance(rules, list) and all(isinstance(r, str) for r in rules)):
        raise RecordInvalid(RULES, "must be a list of rule ids")


def is_canonical(data: bytes) -> bool:
    """True when ``encode(decode(data)) == data`` (a wire codec may then rebuild it)."""
    try:
        return encode(decode(data)) == data
    except (RecordMalformed, RecordInvalid):
        return False


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 ‖ record bytes)."""
    return hashlib.sha256(b"\x00" + data).digest()
