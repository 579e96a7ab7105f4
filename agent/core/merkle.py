"""RFC 6962 / RFC 9162 Merkle tree hash and inclusion proofs.

Leaves are already leaf hashes (``record.leaf_hash``). The tree is built bottom-up,
carrying an unpaired last node up a level unchanged; that is the same tree as RFC 6962's
recursive split at the largest power of two below n (tests check both agree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class Frontier:
    """The tree hash kept up to date leaf by leaf: the roots of the perfect subtrees the
    leaves so far make up (RFC 6962's tree is left-balanced: sizes are the binary digits of
    n, largest first). A push costs one hash amortised, ``root()`` at most log2(n) hashes,
    so a seal after leaves pushed one at a time does not hash the whole range at once."""

    __slots__ = ("_nodes", "count")

    def __init__(self) -> None:
        self._nodes: list[tuple[int, bytes]] = []  # (subtree size, root), sizes decreasing
        self.count = 0

    def push(self, leaf: bytes) -> None:
        nodes = self._nodes
        size, h = 1, leaf
        while nodes and nodes[-1][0] == size:
            left = nodes.pop()[1]
            h = _sha256(b"\x01" + left + h).digest()
            size *= 2
        nodes.append((size, h))
        self.count += 1

    def root(self) -> bytes:
        nodes = self._nodes
        if not nodes:
            return EMPTY_ROOT
        h = nodes[-1][1]
        for _, left in reversed(nodes[:-1]):
            h = _sha256(b"\x01" + left + h).digest()
        return h


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash of leaf hashes; SHA-256("") for none."""
    level = list(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [_sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
        if odd is not None:
            level.append(odd)
    return level[0]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for ``leaves[index]`` (RFC 6962 §2.1.1), bottom to top."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} not in a tree of {len(leaves)}")
    proof: list[bytes] = []
    level = list(leaves)
    i = index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        odd = level[-1] if len(level) & 1 else None
        level = [node_hash(a, b) for a, b in zip(level[0::2], level[1::2])]
        if odd is not None:
            level.append(odd)
        i //= 2
    return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2 inclusion-proof check; never raises on bad input."""
    if not (0 <= index < size) or any(not isinstance(p, bytes) or len(p) != 32 for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def inclusion_proofs(leaves: Sequence[bytes], indices: Sequence[int]) -> list[list[bytes]]:
    """Audit paths for several leaves of one tree, hashing the tree once (``inclusion_proof``
    rebuilds it per call)."""
    for index in indices:
        if not 0 <= index < len(leaves):
            raise IndexError(f"leaf {index} not in a tree of {len(leaves)}")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        up = [_sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
        if len(level) & 1:
            up.append(level[-1])
        levels.append(up)
    proofs = []
    for index in indices:
        proof, i = [], index
        for level in levels[:-1]:
            if (i ^ 1) < len(level):
                proof.append(level[i ^ 1])
            i //= 2
        proofs.append(proof)
    return proofs
