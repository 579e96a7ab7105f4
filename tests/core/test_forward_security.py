"""After the device moves past epoch e, nothing on it lets anyone forge an fs tag for an earlier epoch."""

import os
from pathlib import Path

from agent.core import checkpoint
from agent.core.chain import ChainState, Sealer
from agent.core.keys import fs_key_at, fs_tag
from agent.keystore import FileKeyStore


def test_keys_of_past_epochs_are_nowhere_on_the_device(tmp_path: Path):
    store = FileKeyStore.create(tmp_path / "keys")
    epoch0, k0 = store.fs_load()
    assert epoch0 == 0
    sealer = Sealer(ChainState.genesis("dev-F", k0), store.signer())
    store.fs_erase()  # the daemon takes K_0 into its chain state at first start
    messages = []
    for e in range(5):
        sealer.append({"api": "x", "n": e}, e, e)
        messages.append(sealer.seal(mono=e, wall=e, reason="size").message)
        # the device persists only the key for the next epoch, overwriting in place
        state_file = tmp_path / "state.bin"
        fd = os.open(state_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(fd, sealer.state.fs_key, 0)
        os.close(fd)
    past_keys = [fs_key_at(k0, e) for e in range(5)]  # K_0..K_4, all used
    assert sealer.state.fs_key == fs_key_at(k0, 5)

    # 1. No file on the device holds any past key.
    blobs = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for key in past_keys:
        assert key not in blobs
    # 2. The sealer's memory holds only K_5 (the erased bytearray was zeroed).
    assert bytes(sealer._fs_key) == fs_key_at(k0, 5)
    # 3. What the device does hold (K_5) cannot tag epoch 4's payload: the collector
    #    checks with K_4, which only evolving *backwards* from K_5 would give.
    cp4 = checkpoint.parse(messages[4])
    assert fs_tag(past_keys[4], cp4.unsigned_payload) == cp4.fs
    assert fs_tag(sealer.state.fs_key, cp4.unsigned_payload) != cp4.fs


def test_key_store_refuses_to_move_the_fs_key_backwards(tmp_path: Path):
    import pytest
    from agent.core.errors import KeyStoreError
    store = FileKeyStore.create(tmp_path / "keys")
    store.fs_store(7, os.urandom(32))
    with pytest.raises(KeyStoreError):
        store.fs_store(6, os.urandom(32))
