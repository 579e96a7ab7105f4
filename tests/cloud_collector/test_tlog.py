"""The collector's transparency log over the real SQLite store: batches, tiles, signed checkpoints."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import tlog
from agent.core.keys import generate_signer
from cloud_collector.store.sqlite import SQLiteStore
from cloud_collector.tlog import TransparencyLog, log_signer, store_node


def H(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def mth(d: list[bytes]) -> bytes:
    """RFC 6962 §2.1 over entry bytes, recursively."""
    if not d:
        return H(b"")
    if len(d) == 1:
        return H(b"\x00" + d[0])
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return H(b"\x01" + mth(d[:k]) + mth(d[k:]))


def independent_note(text: str) -> dict:
    """c2sp.org/signed-note + tlog-checkpoint, parsed from the spec alone (not agent.core.note)."""
    assert text.endswith("\n")
    body, _, sigs = text.rpartition("\n\n")
    body += "\n"
    lines = body.split("\n")[:-1]
    origin, size, root = lines[0], lines[1], lines[2]
    assert size == str(int(size)) and int(size) >= 0
    out = {"origin": origin, "size": int(size), "root": base64.b64decode(root, validate=True), "text": body, "sigs": []}
    for line in sigs.split("\n")[:-1]:
        dash, name, sig = line.split(" ")
        assert dash == "\u2014"
        raw = base64.b64decode(sig, validate=True)
        out["sigs"].append((name, raw[:4], raw[4:]))
    return out


def queue(store: SQLiteStore, entries: list[tuple[str, int, bytes, int]]) -> None:
    with store.transaction():
        for dev, cp, h, t in entries:
            store.tlog_queue(dev, cp, h, t)


def entry(i: int) -> tuple[str, int, bytes, int]:
    return (f"cp-{i % 7:04d}", i // 7, H(b"cp %d" % i), 1_700_000_000_000 + i)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=5), st.integers(1, 600))
def test_batched_integration_gives_the_rfc6962_tree_and_the_spec_tiles(tmp_path_factory, batches, max_batch):
    store = SQLiteStore(str(tmp_path_factory.mktemp("tlog") / "c.db"))
    signer = log_signer(generate_signer())
    lg = TransparencyLog(store, signer, max_batch=max_batch)
    entries: list[bytes] = []
    for n in batches:
        new = [entry(len(entries) + i) for i in range(n)]
        queue(store, new)
        entries += [tlog.encode_entry(*e) for e in new]
        assert lg.integrate_all() == n
        size, root, note = store.tlog_head()
        assert size == len(entries) and root == mth(entries)
        cp = independent_note(note)
        assert (cp["origin"], cp["size"], cp["root"]) == (signer.name, size, root)
    # every tile is the spec's: level 0 the leaf hashes, level 1 the MTH of full level-0 tiles
    leaves = [H(b"\x00" + e) for e in entries]
    for t in range(0, len(leaves), 256):
        assert store.tlog_tile(0, t // 256) == b"".join(leaves[t:t + 256])
    if len(leaves) >= 256:
        assert store.tlog_tile(1, 0)[:32] == mth(entries[:256])
    node = store_node(store)
    size = len(entries)
    for i in {0, size // 2, size - 1}:
        proof = tlog.inclusion_proof(i, size, node)
        assert tlog.verify_inclusion(leaves[i], i, size, proof, mth(entries))
    store.close()


def test_signed_note_parses_independently_and_verifies_with_the_spec_key_id(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    collector_key = generate_signer()
    signer = log_signer(collector_key)
    assert signer.name == f"veritrail/collector/{collector_key.kid}"
    assert log_signer(collector_key).verifier == signer.verifier   # derived, stable
    queue(store, [entry(i) for i in range(5)])
    TransparencyLog(store, signer).integrate_all()
    cp = independent_note(store.tlog_head()[2])
    (name, kid, sig), = cp["sigs"]
    vkey_name, vkey_id, vkey_key = signer.verifier.vkey().split("+", 2)
    raw_key = base64.b64decode(vkey_key)
    assert name == vkey_name == cp["origin"] and raw_key[0] == 0x01
    assert kid == H(name.encode() + b"\n\x01" + raw_key[1:])[:4] and kid.hex() == vkey_id
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(sig, cp["text"].encode())
    assert store.tlog_identity() == (signer.name, signer.verifier.vkey())


def test_a_different_log_key_cannot_take_over_the_log(tmp_path):
    import pytest

    from cloud_collector.errors import StoreError
    store = SQLiteStore(str(tmp_path / "c.db"))
    queue(store, [entry(0)])
    TransparencyLog(store, log_signer(generate_signer())).integrate_all()
    queue(store, [entry(1)])
    with pytest.raises(StoreError, match="log key"):
        TransparencyLog(store, log_signer(generate_signer())).integrate()
    assert store.tlog_head()[0] == 1
