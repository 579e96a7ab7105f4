"""Key store: where the device's signing keys and its forward-secure key live.

One small interface (``KeyStore``) so a PKCS#11 or TPM store can replace the file store.
``FileKeyStore`` keeps, in a directory of mode 0700:

- ``signing.json`` (0600): the current and the next (rotation) signing keys, written
  atomically (temp file, fsync, rename, fsync of the directory);
- ``fs.key`` (0600): the forward-secure key K_e with its epoch, overwritten in place
  (fixed size, fsynced) so the previous key's bytes are not left in a freed block.
  ``fs_store`` refuses to go backwards; erased keys cannot be recovered from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Protocol

from .core.errors import KeyStoreError
from .fsutil import write_atomic
from .core.keys import ALGS, ED25519, generate_signer, load_signer

_FS_FORMAT = ">Q32s16s"  # epoch, key, check (first 16 bytes of SHA-256 over epoch‖key)
_FS_SIZE = struct.calcsize(_FS_FORMAT)


class KeyStore(Protocol):
    def signer(self): ...  # the current signing key
    def next_signer(self): ...  # a rotation key not yet in use, or None
    def stage_rotation(self, alg: str = ED25519): ...
    def complete_rotation(self) -> None: ...
    def fs_load(self) -> tuple[int, bytes] | None: ...
    def fs_store(self, epoch: int, key: bytes) -> None: ...
    def fs_erase(self) -> None: ...


class FileKeyStore:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self._signing = self.dir / "signing.json"
        self._fs = self.dir / "fs.key"
        if not self._signing.exists():
            raise KeyStoreError(f"no keys in {self.dir} (run 'veritrail agent init')")
        self._check_mode(self._signing)
        self._doc = self._read_signing()

    # --- creation -----------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path | str, *, alg: str = ED25519, force: bool = False) -> "FileKeyStore":
        """New signing key and K_0. Refuses to overwrite existing keys unless ``force``."""
        if alg not in ALGS:
            raise KeyStoreError(f"unknown algorithm {alg!r}; use one of {ALGS}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        if (d / "signing.json").exists() and not force:
            raise KeyStoreError(f"keys already exist in {d}; use --force to replace them")
        signer = generate_signer(alg)
        doc = {"current": {"alg": alg, "priv": signer.private_bytes().hex()}, "next": None}
        write_atomic(d / "signing.json", json.dumps(doc).encode())
        store = cls(d)
        if (d / "fs.key").exists():
            store.fs_erase()
        store.fs_store(0, os.urandom(32))
        return store

    # --- signing keys -------------------------------------------------------------
    def _check_mode(self, path: Path) -> None:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyStoreError(f"{path.name} has mode {mode:o}; it must be 0600")

    def _read_signing(self) -> dict:
        try:
            doc = json.loads(self._signing.read_bytes())
            load_signer(doc["current"]["alg"], bytes.fromhex(doc["current"]["priv"]))
            return doc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"cannot read {self._signing.name}: {type(exc).__name__}") from None

    def signer(self):
        c = self._doc["current"]
        return load_signer(c["alg"], bytes.fromhex(c["priv"]))

    def next_signer(self):
        n = self._doc.get("next")
        return load_signer(n["alg"], bytes.fromhex(n["priv"])) if n else None

    def stage_rotation(self, alg: str = ED25519):
        """Create the next key (kept until the rotation checkpoint is sealed)."""
        signer = generate_signer(alg)
        self._doc["next"] = {"alg": alg, "priv": signer.private_bytes().hex()}
        write_atomic(self._signing, json.dumps(self._doc).encode())
        return signer

    def complete_rotation(self) -> None:
        """After the checkpoint naming the next key is durable: it becomes current."""
        if not self._doc.get("next"):
            raise KeyStoreError("no rotation staged")
        self._doc = {"current": self._doc["next"], "next": None}
        write_atomic(self._signing, json.dumps(self._doc).encode())

    # --- forward-secure key -------------------------------------------------------
    def fs_load(self) -> tuple[int, bytes] | None:
        try:
            raw = self._fs.read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) != _FS_SIZE:
            raise KeyStoreError("fs.key has the wrong size")
        epoch, key, check = struct.unpack(_FS_FORMAT, raw)
        if key == bytes(32):
            return None  # erased
        if hashlib.sha256(raw[:40]).digest()[:16] != check:
            raise KeyStoreError("fs.key is damaged")
        return epoch, key

    def fs_store(self, epoch: int, key: bytes) -> None:
        """Overwrite the slot with K_epoch; refuses to move backwards."""
        if len(key) != 32:
            raise KeyStoreError("forward-secure key must be 32 bytes")
        current = self.fs_load() if self._fs.exists() else None
        if current is not None and epoch < current[0]:
            raise KeyStoreError(f"fs epoch {epoch} is before the stored epoch {current[0]}")
        head = struct.pack(">Q32s", epoch, key)
        self._overwrite(head + hashlib.sha256(head).digest()[:16])

    def fs_erase(self) -> None:
        """Zero the slot in place, then remove it."""
        if self._fs.exists():
            self._overwrite(bytes(_FS_SIZE))
            self._fs.unlink()

    def _overwrite(self, data: bytes) -> None:
        fd = os.open(self._fs, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
