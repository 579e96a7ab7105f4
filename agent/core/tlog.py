"""The collector's transparency log, the pure part: entries, RFC 6962 proofs, tiles (DESIGN §6.1).

A log leaf is one device checkpoint the collector accepted. Its entry bytes are

    0x01 (version) ‖ u8 len(dev) ‖ dev (UTF-8) ‖ u64 cp ‖ 32-byte checkpoint hash ‖ u64 received_ms

(integers big-endian), and its leaf hash is ``SHA-256(0x00 ‖ entry)`` (RFC 6962 §2.1).

Proofs are built from a ``node(level, index)`` callable that returns the hash of the perfect
subtree of ``2**level`` leaves starting at leaf ``index * 2**level``, so the same code serves
an in-memory list (tests), the collector's stored tiles and tiles fetched over HTTP.

Tiles follow c2sp.org/tlog-tiles: height 8 (256 hashes of 32 bytes), ``tile/<L>/<N>[.p/<W>]``
with N in 3-digit groups (``x001/x234/067``), entry bundles of uint16-length-prefixed entries.
Every decoder here takes bytes from outside, checks limits and raises one of our
``LogFormatError`` subclasses, never anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import merkle
from .errors import EntryMalformed, ProofMalformed, TileMalformed

HASH_BYTES = 32
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT          # hashes in a full tile
MAX_LEVEL = 63
MAX_PROOF_HASHES = 63                  # tlog-witness: at most 63 consistency proof lines
MAX_TREE_SIZE = (1 << 63) - 1
ENTRY_VERSION = 1
MAX_DEV_BYTES = 128
MAX_ENTRY_BYTES = 1 + 1 + MAX_DEV_BYTES + 8 + HASH_BYTES + 8
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = Callable[[int, int], bytes]     # (level, index) -> hash of that perfect subtree
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


node_hash = merkle.node_hash


# --- entries ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogEntry:
    dev: str
    cp: int
    cp_hash: bytes
    received_ms: int

    def encode(self) -> bytes:
        return encode_entry(self.dev, self.cp, self.cp_hash, self.received_ms)


def encode_entry(dev: str, cp: int, cp_hash: bytes, received_ms: int) -> bytes:
    d = dev.encode()
    if not 1 <= len(d) <= MAX_DEV_BYTES:
        raise EntryMalformed(f"device id of {len(d)} bytes (1..{MAX_DEV_BYTES})")
    if len(cp_hash) != HASH_BYTES:
        raise EntryMalformed("checkpoint hash must be 32 bytes")
    if not (0 <= cp < 1 << 64 and 0 <= received_ms < 1 << 64):
        raise EntryMalformed("cp and received_ms must be unsigned 64-bit")
    return b"".join((bytes((ENTRY_VERSION, len(d))), d, cp.to_bytes(8, "big"), bytes(cp_hash),
                     received_ms.to_bytes(8, "big")))


def decode_entry(data: bytes) -> LogEntry:
    if not isinstance(data, (bytes, bytearray)):
        raise EntryMalformed("not bytes")
    if len(data) < 2 or len(data) > MAX_ENTRY_BYTES:
        raise EntryMalformed(f"{len(data)} bytes")
    if data[0] != ENTRY_VERSION:
        raise EntryMalformed(f"version {data[0]}, expected {ENTRY_VERSION}")
    n = data[1]
    if n == 0 or len(data) != 2 + n + 8 + HASH_BYTES + 8:
        raise EntryMalformed("length does not match the device id length")
    try:
        dev = bytes(data[2:2 + n]).decode()
    except UnicodeDecodeError:
        raise EntryMalformed("device id is not UTF-8") from None
    o = 2 + n
    return LogEntry(dev, int.from_bytes(data[o:o + 8], "big"), bytes(data[o + 8:o + 40]),
                    int.from_bytes(data[o + 40:o + 48], "big"))


# --- tree hashes and proofs over node() ---------------------------------------------

def _chunks(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as perfect aligned subtrees (level, index), largest first: the RFC 6962
    decomposition of any range that occurs in the tree's recursive split."""
    out = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while (1 << level) > end - start:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def range_hash(start: int, end: int, node: Node) -> bytes:
    """MTH(D[start:end]) for a range of the recursive split (start aligned to the range's size)."""
    if start >= end:
        return EMPTY_ROOT
    parts = [node(level, index) for level, index in _chunks(start, end)]
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def root(size: int, node: Node) -> bytes:
    return range_hash(0, size, node)


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, node: Node) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf side first."""
    if not 0 <= index < size:
        raise ProofMalformed(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            path.append(range_hash(lo + k, lo + n, node))
            n = k
        else:
            path.append(range_hash(lo, lo + k, node))
            lo, n, m = lo + k, n - k, m - k
    path.reverse()
    return path


def consistency_proof(old: int, new: int, node: Node) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 6962 §2.1.2; empty when old is 0 or old == new."""
    if not 0 <= old <= new:
        raise ProofMalformed(f"no consistency proof from size {old} to {new}")
    if old == 0 or old == new:
        return []
    proof: list[bytes] = []
    lo, n, m, whole = 0, new, old, True
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(range_hash(lo + k, lo + n, node))
            n = k
        else:
            proof.append(range_hash(lo, lo + k, node))
            lo, n, m, whole = lo + k, n - k, m - k, False
    if not whole:
        proof.append(range_hash(lo, lo + n, node))
    proof.reverse()
    return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2 (merkle.verify_inclusion), with the proof length bounded; never raises."""
    if not (isinstance(index, int) and isinstance(size, int)) or len(proof) > MAX_PROOF_HASHES:
        return False
    return merkle.verify_inclusion(leaf, index, size, proof, expected_root)


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2; False on any bad input, never raises. Size 0 is consistent with
    everything (with an empty proof); equal sizes need equal roots and an empty proof."""
    if not (isinstance(old, int) and isinstance(new, int) and 0 <= old <= new):
        return False
    if len(proof) > MAX_PROOF_HASHES or any(not isinstance(p, bytes) or len(p) != HASH_BYTES for p in proof):
        return False
    if old == 0:
        return not proof
    if old == new:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:          # old is a power of two: its root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def decode_proof(hashes: Sequence[bytes]) -> list[bytes]:
    """Check a proof from outside: at most 63 hashes of 32 bytes."""
    if len(hashes) > MAX_PROOF_HASHES:
        raise ProofMalformed(f"{len(hashes)} hashes, limit {MAX_PROOF_HASHES}")
    for i, h in enumerate(hashes):
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_BYTES:
            raise ProofMalformed(f"hash {i} is not 32 bytes")
    return [bytes(h) for h in hashes]


# --- tiles -------------------------------------------------------------------------

def perfect_hash(hashes: Sequence[bytes]) -> bytes:
    """MTH of a power-of-two run of subtree hashes."""
    return merkle.root(hashes)


def tile_width(level: int, index: int, size: int) -> int:
    """Hashes in tile (level, index) of a tree of ``size`` leaves: 256, a partial width, or 0."""
    have = size >> (TILE_HEIGHT * level)     # complete subtrees of 256**level leaves
    return max(0, min(TILE_WIDTH, have - index * TILE_WIDTH))


def split_tile(data: bytes, width: int) -> list[bytes]:
    """The hashes of a tile of ``width`` entries (the width its path or tree size requires)."""
    if not 1 <= width <= TILE_WIDTH:
        raise TileMalformed(f"width {width} (1..{TILE_WIDTH})")
    if not isinstance(data, (bytes, bytearray)) or len(data) != width * HASH_BYTES:
        raise TileMalformed(f"{len(data) if isinstance(data, (bytes, bytearray)) else '?'} bytes, "
                            f"expected {width * HASH_BYTES} for width {width}")
    return [bytes(data[i:i + HASH_BYTES]) for i in range(0, len(data), HASH_BYTES)]


def tile_node(get_tile: Callable[[int, int], bytes]) -> Node:
    """A ``node(level, index)`` over tiles: ``get_tile(L, N)`` returns tile bytes holding at
    least the hashes needed (a full tile, or a partial one wide enough)."""
    def node(level: int, index: int) -> bytes:
        t_level, r = divmod(level, TILE_HEIGHT)
        start = index << r
        t_index, off = divmod(start, TILE_WIDTH)
        data = get_tile(t_level, t_index)
        lo, hi = off * HASH_BYTES, (off + (1 << r)) * HASH_BYTES
        if len(data) < hi:
            raise TileMalformed(f"tile {t_level}/{t_index} has {len(data) // HASH_BYTES} hashes, "
                                f"needs {hi // HASH_BYTES}")
        return perfect_hash([bytes(data[i:i + HASH_BYTES]) for i in range(lo, hi, HASH_BYTES)])
    return node


def encode_index(n: int) -> str:
    """1234067 -> 'x001/x234/067' (tlog-tiles)."""
    if n < 0:
        raise TileMalformed("negative tile index")
    groups = []
    while True:
        n, r = divmod(n, 1000)
        groups.append(f"{r:03d}")
        if n == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """'tile/L/N[.p/W]' or, with level 'entries', the entry bundle's path."""
    p = f"tile/{level}/{encode_index(index)}"
    return p if width == TILE_WIDTH else f"{p}.p/{width}"


@dataclass(frozen=True, slots=True)
class TileRef:
    level: int | None       # None: an entry bundle
    index: int
    width: int              # 256 for a full tile


def parse_tile_path(path: str) -> TileRef:
    """Parse 'L/N[.p/W]' or 'entries/N[.p/W]' (the part after 'tile/'), strictly."""
    if not isinstance(path, str) or len(path) > 128:
        raise TileMalformed("path too long")
    parts = path.split("/")
    if len(parts) < 2:
        raise TileMalformed(f"bad tile path {path!r}")
    head, rest = parts[0], parts[1:]
    if head == "entries":
        level = None
    elif head.isdigit() and head.isascii() and (head == "0" or not head.startswith("0")) and int(head) <= MAX_LEVEL:
        level = int(head)
    else:
        raise TileMalformed(f"bad tile level {head!r}")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not (w.isascii() and w.isdigit() and not w.startswith("0") and 1 <= int(w) < TILE_WIDTH):
            raise TileMalformed(f"bad partial width {w!r}")
        width = int(w)
        rest = rest[:-2] + [rest[-2][:-2]]
    index = 0
    for i, g in enumerate(rest):
        last = i == len(rest) - 1
        digits = g if last else g[1:]
        if (not last and not g.startswith("x")) or len(digits) != 3 or not (digits.isascii() and digits.isdigit()):
            raise TileMalformed(f"bad tile index element {g!r}")
        index = index * 1000 + int(digits)
    if len(rest) > 7:  # 1000**7 > 2**63 / 256
        raise TileMalformed("tile index too large")
    return TileRef(level, index, width)


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if len(e) > 0xFFFF:
            raise TileMalformed("entry longer than 65535 bytes")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_bundle(data: bytes, width: int) -> list[bytes]:
    """An entry bundle of exactly ``width`` entries."""
    if not isinstance(data, (bytes, bytearray)):
        raise TileMalformed("entry bundle is not bytes")
    if not 1 <= width <= TILE_WIDTH:
        raise TileMalformed(f"width {width} (1..{TILE_WIDTH})")
    out: list[bytes] = []
    o = 0
    while o < len(data):
        if o + 2 > len(data):
            raise TileMalformed("truncated entry length")
        n = int.from_bytes(data[o:o + 2], "big")
        if o + 2 + n > len(data):
            raise TileMalformed(f"entry {len(out)} truncated")
        out.append(bytes(data[o + 2:o + 2 + n]))
        o += 2 + n
        if len(out) > width:
            raise TileMalformed(f"more than {width} entries")
    if len(out) != width:
        raise TileMalformed(f"{len(out)} entries, expected {width}")
    return out
