"""The Sealer: appends records to the open range and seals checkpoints (DESIGN §3).

Pure state machine: times and keys are passed in; the caller (the agent's ledger)
persists ``state`` together with each sealed checkpoint, in one transaction.
"""

from __future__ import annotations

import hashlib

import msgpack
from dataclasses import dataclass, field, replace
from typing import Any

from . import merkle
from .checkpoint import NextKey, genesis_hash, message_hash, seal
from .errors import RecordInvalid, RecordMalformed
from .keys import Signer, fs_evolve
from .record import BOOT, KIND, MONO, SEQ, WALL
from .record import decode as _decode
from .record import encode as _encode

_pack = msgpack.Packer(use_bin_type=True).pack  # raw: ints never fail; fields are guarded below

_K_SEQ, _K_BOOT, _K_MONO, _K_WALL = (_pack(k) for k in (SEQ, BOOT, MONO, WALL))
_KV_KIND_API = _pack(KIND) + _pack("api")  # appended to raw fields without a kind (as ingest does)
_FIXMAP = [bytes((0x80 | n,)) for n in range(16)]
_HEADER_KEYS = frozenset((SEQ, BOOT, MONO, WALL))
_sha256 = hashlib.sha256


_PUSH_MAX = 4  # appends of up to this many records go into the open range's Frontier


def _root(op: "_Open") -> bytes:
    """The open range's tree hash: from its Frontier where that holds every leaf so far,
    from the leaves at once where it holds none, else the Frontier finished leaf by leaf."""
    frontier, leaves = op.frontier, op.leaves
    if frontier.count == 0:
        return merkle.root(leaves)
    for leaf in leaves[frontier.count:]:
        frontier.push(leaf)
    return frontier.root()


def _splice(body: bytes, header_kvs: bytes, n_kvs: int = 4) -> bytes:
    """Insert ``n_kvs`` packed key/value pairs at the front of a packed map (``body``)."""
    b0 = body[0]
    if 0x80 <= b0 <= 0x8F:
        count, offset = b0 & 0x0F, 1
    elif b0 == 0xDE:
        count, offset = int.from_bytes(body[1:3], "big"), 3
    elif b0 == 0xDF:
        count, offset = int.from_bytes(body[1:5], "big"), 5
    else:
        raise RecordInvalid("*", "fields must be a map")
    total = count + n_kvs
    if total < 16:
        head = _FIXMAP[total]
    elif total < 0x10000:
        head = b"\xde" + total.to_bytes(2, "big")
    else:
        head = b"\xdf" + total.to_bytes(4, "big")
    return b"".join((head, header_kvs, body[offset:]))


@dataclass(frozen=True, slots=True)
class ChainState:
    """What must survive a restart. ``fs_key`` is K_{next_cp}: earlier keys are gone."""

    device_id: str
    boot: int
    next_seq: int
    next_cp: int
    prev_cp_hash: bytes
    fs_key: bytes

    @classmethod
    def genesis(cls, device_id: str, fs_k0: bytes) -> "ChainState":
        return cls(device_id, 0, 0, 0, genesis_hash(device_id), bytes(fs_k0))


@dataclass(frozen=True, slots=True)
class Sealed:
    """One sealed checkpoint: its message, its records (bytes, in seq order) and the state after it."""

    message: bytes
    hash: bytes
    cp: int
    first: int
    last: int
    records: list[bytes]
    kinds: list[str]
    state: ChainState


@dataclass(slots=True)
class _Open:
    records: list[bytes] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    nbytes: int = 0
    # Records appended a few at a time (commands, alerts, sync writes: the ranges a verdict
    # waits on) are hashed into the tree as they come, so sealing them costs log2(n) hashes,
    # not n; bulk batches leave it to the seal (one comprehension per level is faster).
    frontier: merkle.Frontier = field(default_factory=merkle.Frontier)


class Sealer:
    def __init__(self, state: ChainState, signer: Signer) -> None:
        self._state = state
        self._signer = signer
        self._next_signer: Signer | None = None
        self._fs_key = bytearray(state.fs_key)
        self._seq = state.next_seq
        self._open = _Open()
        self._boot_kv = _K_BOOT + _pack(state.boot)
        self._mw_mono = self._mw_wall = -1
        self._mw = b""

    @property
    def state(self) -> ChainState:
        """State as of the last seal (the open range is not in it)."""
        return self._state

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def pending(self) -> int:
        return len(self._open.records)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the open range's records."""
        return self._open.nbytes

    @property
    def signer(self) -> Signer:
        return self._signer

    def append(self, fields: dict[str, Any], mono: int, wall: int) -> tuple[int, bytes]:
        """Add one record; returns (seq, record bytes). ``fields`` must not carry seq/boot/mono/wall.

        The bytes equal ``msgpack.packb({seq, boot, mono, wall, **fields})`` (a property test
        pins this); they are spliced from the packed fields and a packed header instead of
        building a merged dict per record, which is the hot path's largest saving.
        """
        first = self.append_batch([fields], mono, wall)
        return first, self._open.records[-1]

    def append_batch(self, batch: list[dict[str, Any]], mono: int, wall: int) -> int:
        """Append records read together (one clock reading); returns the first one's seq.

        Same bytes as ``append`` per record; the loop runs here so the per-record cost is
        the encoding and the hash, not method calls. All-or-nothing: a bad record raises
        before anything is added.
        """
        tail = self._header_tail(mono, wall)
        first = seq = self._seq
        pack, join, fixmap, kseq, header = _pack, b"".join, _FIXMAP, _K_SEQ, _HEADER_KEYS
        datas: list[bytes] = []
        add = datas.append
        for fields in batch:
            if not header.isdisjoint(fields):
                raise RecordInvalid(next(k for k in (SEQ, BOOT, MONO, WALL) if k in fields),
                                    "set by the agent, not the caller")
            try:
                body = pack(fields)
            except (TypeError, ValueError, OverflowError):
                body = _encode(fields)
            b0 = body[0]
            if 0x80 <= b0 <= 0x8B:  # fixmap with room for the 4 header keys
                add(join((fixmap[b0 - 0x7C], kseq, pack(seq), tail, body[1:])))
            else:
                add(_splice(body, kseq + pack(seq) + tail))
            seq += 1
        self._add(datas, [fields.get(KIND, "api") for fields in batch], seq)
        return first

    def append_raw_batch(self, bodies: list[bytes], kinds: list[str | None], mono: int, wall: int) -> int:
        """Append records whose fields arrive already packed (a ``recb`` frame's items);
        returns the first one's seq.

        Each body is one packed map of record fields that the caller has decoded and
        checked: no seq/boot/mono/wall key, no key twice. ``kinds[i]`` is the body's
        ``kind`` value, or None when it has none: then ``kind: "api"`` is appended after
        the body's entries. The body's bytes are kept as they are, after the spliced
        header, so a body packed canonically (shortest forms, as ``msgpack.packb``) gives
        exactly the bytes ``append_batch`` gives for its decoded fields with ``kind``
        last; a body packed otherwise keeps its form (still hashed, sealed and verified
        the same way; the wire codec sends such records raw). All-or-nothing: a body that
        is not a map raises before anything is added.
        """
        if len(bodies) != len(kinds):
            raise ValueError("bodies and kinds differ in length")
        tail = self._header_tail(mono, wall)
        first = seq = self._seq
        pack, join, fixmap, kseq, kind_api = _pack, b"".join, _FIXMAP, _K_SEQ, _KV_KIND_API
        datas: list[bytes] = []
        add = datas.append
        try:
            for body, kind in zip(bodies, kinds):
                b0 = body[0]
                if kind is None:
                    if 0x80 <= b0 <= 0x8A:  # fixmap with room for 4 header keys and kind
                        add(join((fixmap[b0 - 0x7B], kseq, pack(seq), tail, body[1:], kind_api)))
                    else:
                        add(_splice(body, kseq + pack(seq) + tail, 5) + kind_api)
                elif 0x80 <= b0 <= 0x8B:
                    add(join((fixmap[b0 - 0x7C], kseq, pack(seq), tail, body[1:])))
                else:
                    add(_splice(body, kseq + pack(seq) + tail))
                seq += 1
        except (IndexError, TypeError):
            raise RecordInvalid("*", "fields must be a packed map") from None
        self._add(datas, [k or "api" for k in kinds], seq)
        return first

    def open_rows(self, after_seq: int) -> list[tuple[int, str, bytes]]:
        """(seq, kind, record bytes) of the open range's records with seq > ``after_seq``:
        what the ledger journals so a verdict can be answered before the range is sealed."""
        first = self._state.next_seq
        op = self._open
        start = max(0, after_seq + 1 - first)
        return [(first + i, op.kinds[i], op.records[i]) for i in range(start, len(op.records))]

    def restore(self, rows: list[tuple[int, str, bytes]]) -> None:
        """Put journaled records (complete, as ``open_rows`` gave them) back in the open range
        after a crash, so they can be sealed under the boot that wrote them. Their seq must
        continue the chain and their boot must be this state's: otherwise RecordInvalid and
        nothing is added."""
        expected, datas, kinds = self._seq, [], []
        for seq, kind, data in rows:
            try:
                rec = _decode(data)
            except RecordMalformed as exc:
                raise RecordInvalid(SEQ, f"journaled record {seq} undecodable: {exc.reason}") from None
            if seq != expected or rec.get(SEQ) != seq or rec.get(BOOT) != self._state.boot or rec.get(KIND) != kind:
                raise RecordInvalid(SEQ, f"journaled record {seq} does not continue the chain at {expected}")
            datas.append(data)
            kinds.append(kind)
            expected += 1
        self._add(datas, kinds, expected)

    def _header_tail(self, mono: int, wall: int) -> bytes:
        """boot, mono and wall packed; the (mono, wall) pair is reused while the ms clock
        does not tick."""
        if mono < 0 or wall < 0:
            raise RecordInvalid(MONO if mono < 0 else WALL, "must be an unsigned integer")
        if mono != self._mw_mono or wall != self._mw_wall:
            self._mw_mono, self._mw_wall = mono, wall
            self._mw = b"".join((_K_MONO, _pack(mono), _K_WALL, _pack(wall)))
        return self._boot_kv + self._mw

    def _add(self, datas: list[bytes], kinds: list[str], next_seq: int) -> None:
        """Put encoded records and their leaf hashes in the open range."""
        op = self._open
        op.records += datas
        op.nbytes += sum(map(len, datas))
        sha256 = _sha256
        leaves = [sha256(b"\x00" + d).digest() for d in datas]
        frontier = op.frontier
        if len(leaves) <= _PUSH_MAX and frontier.count == len(op.leaves):
            for leaf in leaves:
                frontier.push(leaf)
        op.leaves += leaves
        op.kinds += kinds
        self._seq = next_seq

    def rotate(self, new_signer: Signer) -> None:
        """The next checkpoint, signed by the current key, names ``new_signer``; later ones use it."""
        self._next_signer = new_signer

    def seal(self, *, mono: int, wall: int, reason: str) -> Sealed:
        """Seal the open range (possibly empty: a heartbeat) into the next checkpoint."""
        st = self._state
        op, self._open = self._open, _Open()
        n = len(op.records)
        fields: dict[str, Any] = {
            "dev": st.device_id, "boot": st.boot, "cp": st.next_cp,
            "first": st.next_seq, "last": st.next_seq + n - 1, "n": n,
            "root": _root(op), "prev_cp": st.prev_cp_hash,
            "mono": mono, "wall": wall, "why": reason,
        }
        nxt = self._next_signer
        if nxt is not None:
            fields["nk"] = [nxt.kid, nxt.alg, nxt.public_bytes()]
        message = seal(fields, self._signer, self._fs_key)
        digest = message_hash(message)
        new_key = fs_evolve(bytes(self._fs_key))
        self._fs_key[:] = bytes(len(self._fs_key))  # erase K_e (best effort in CPython)
        self._fs_key = bytearray(new_key)
        self._state = replace(st, next_seq=st.next_seq + n, next_cp=st.next_cp + 1,
                              prev_cp_hash=digest, fs_key=new_key)
        if nxt is not None:
            self._signer, self._next_signer = nxt, None
        return Sealed(message, digest, st.next_cp, st.next_seq, st.next_seq + n - 1,
                      op.records, op.kinds, self._state)


def next_key_of(signer: Signer) -> NextKey:
    return NextKey(signer.kid, signer.alg, signer.public_bytes())
