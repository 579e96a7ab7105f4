"""File key store: 0600, atomic, never overwrites keys without force, rotation."""

import os
import stat

import pytest

from agent.core.errors import KeyStoreError
from agent.keystore import FileKeyStore


def test_create_modes_and_refuse_overwrite(tmp_path):
    d = tmp_path / "keys"
    store = FileKeyStore.create(d, alg="ES256")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in ("signing.json", "fs.key"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    kid = store.signer().kid
    with pytest.raises(KeyStoreError, match="--force"):
        FileKeyStore.create(d)
    assert FileKeyStore(d).signer().kid == kid
    assert FileKeyStore.create(d, force=True).signer().kid != kid


def test_loose_mode_is_refused(tmp_path):
    d = tmp_path / "keys"
    FileKeyStore.create(d)
    os.chmod(d / "signing.json", 0o644)
    with pytest.raises(KeyStoreError, match="0600"):
        FileKeyStore(d)


def test_rotation_and_fs_erase(tmp_path):
    store = FileKeyStore.create(tmp_path / "k")
    old = store.signer().kid
    nxt = store.stage_rotation()
    assert FileKeyStore(tmp_path / "k").next_signer().kid == nxt.kid
    store.complete_rotation()
    reopened = FileKeyStore(tmp_path / "k")
    assert reopened.signer().kid == nxt.kid != old and reopened.next_signer() is None
    reopened.fs_erase()
    assert reopened.fs_load() is None and not (tmp_path / "k" / "fs.key").exists()


def test_damaged_fs_slot_is_reported(tmp_path):
    store = FileKeyStore.create(tmp_path / "k")
    raw = bytearray((tmp_path / "k" / "fs.key").read_bytes())
    raw[3] ^= 0xFF
    (tmp_path / "k" / "fs.key").write_bytes(bytes(raw))
    with pytest.raises(KeyStoreError, match="damaged"):
        store.fs_load()
