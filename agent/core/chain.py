"""The Sealer: appends records to the open range and seals checkpoints (DESIGN §3).

Pure state machine: times and keys are passed in; the caller (the agent's ledger)
persists ``state`` together with each sealed checkpoint, in one transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from . import merkle
from .checkpoint import NextKey, genesis_hash, message_hash, seal
from .errors import RecordInvalid
from .keys import Signer, fs_evolve
from .record import BOOT, HEADER, KIND, MONO, SEQ, WALL, encode

_HEADER_KEYS = frozenset(HEADER) - {KIND}
_sha256 = hashlib.sha256


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


class Sealer:
    def __init__(self, state: ChainState, signer: Signer) -> None:
        self._state = state
        self._signer = signer
        self._next_signer: Signer | None = None
        self._fs_key = bytearray(state.fs_key)
        self._seq = state.next_seq
        self._open = _Open()

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
    def signer(self) -> Signer:
        return self._signer

    def append(self, fields: dict[str, Any], mono: int, wall: int) -> tuple[int, bytes]:
        """Add one record; returns (seq, record bytes). ``fields`` must not carry seq/boot/mono/wall."""
        if not _HEADER_KEYS.isdisjoint(fields):
            raise RecordInvalid(next(iter(_HEADER_KEYS.intersection(fields))), "set by the agent, not the caller")
        seq = self._seq
        record = {SEQ: seq, BOOT: self._state.boot, MONO: mono, WALL: wall}
        record.update(fields)
        data = encode(record)
        op = self._open
        op.records.append(data)
        op.leaves.append(_sha256(b"\x00" + data).digest())
        op.kinds.append(fields.get(KIND, "api"))
        self._seq = seq + 1
        return seq, data

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
            "root": merkle.root(op.leaves), "prev_cp": st.prev_cp_hash,
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
