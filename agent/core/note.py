"""Signed notes (c2sp.org/signed-note), log checkpoints (c2sp.org/tlog-checkpoint) and
Ed25519 witness cosignatures (c2sp.org/tlog-cosignature, cosignature/v1). Pure.

    note      = text (ends in "\\n") ‖ "\\n" ‖ signature lines "— <name> <base64(key id ‖ sig)>\\n"
    key id    = SHA-256(name ‖ "\\n" ‖ type ‖ public key)[:4]; type 0x01 Ed25519, 0x04 cosignature
    vkey      = "<name>+<key id hex>+<base64(type ‖ public key)>"   (verifier key string)
    checkpoint text = origin "\\n" size "\\n" base64(root) "\\n" [extension lines]
    cosignature/v1: Ed25519 over "cosignature/v1\\ntime <t>\\n" ‖ checkpoint text; sig = u64 t ‖ 64-byte sig

Decoders take text from outside with limits and raise ``NoteMalformed``, never anything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NoteMalformed
from .keys import ED25519, PublicKey, Signer

ED25519_TYPE = 0x01
COSIG_TYPE = 0x04
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 64
MAX_NAME_BYTES = 256
EM_DASH = "\u2014"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    """Strict standard base64 (canonical: re-encodes to the same text)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise NoteMalformed(f"{what} is not base64") from None
    if b64(raw) != text:
        raise NoteMalformed(f"{what} is not canonical base64")
    return raw


def _check_name(name: str) -> None:
    if not name or len(name.encode()) > MAX_NAME_BYTES or any(c.isspace() or c == "+" for c in name):
        raise NoteMalformed(f"bad key name {name[:40]!r}")


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes((sig_type,)) + public).digest()[:4]


@dataclass(frozen=True, slots=True)
class Verifier:
    """A note verifier key: name, type (0x01 log signature, 0x04 cosignature), Ed25519 public key."""

    name: str
    sig_type: int
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    def vkey(self) -> str:
        return f"{self.name}+{self.id.hex()}+{b64(bytes((self.sig_type,)) + self.public)}"

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            return PublicKey(ED25519, self.public).verify(signature, data)
        except ValueError:  # not a usable Ed25519 public key
            return False


def parse_vkey(text: str) -> Verifier:
    if not isinstance(text, str) or len(text) > 1024:
        raise NoteMalformed("verifier key too long")
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteMalformed("verifier key is not name+id+key")
    name, hid, key = parts
    _check_name(name)
    raw = unb64(key, "verifier key")
    if len(raw) != 33 or raw[0] not in (ED25519_TYPE, COSIG_TYPE):
        raise NoteMalformed("verifier key is not an Ed25519 (0x01) or cosignature (0x04) key")
    v = Verifier(name, raw[0], raw[1:])
    if hid != v.id.hex():
        raise NoteMalformed("verifier key id does not match its name and key")
    return v


class NoteSigner:
    """Signs notes with an Ed25519 key (``Signer`` from keys.py) under a key name."""

    def __init__(self, name: str, signer: Signer, sig_type: int = ED25519_TYPE) -> None:
        _check_name(name)
        if signer.alg != ED25519:
            raise ValueError("note keys are Ed25519")
        self.name, self._signer, self.sig_type = name, signer, sig_type
        self.verifier = Verifier(name, sig_type, signer.public_bytes())

    def sign_line(self, text: str) -> str:
        sig = self._signer.sign(text.encode())
        return f"{EM_DASH} {self.name} {b64(self.verifier.id + sig)}\n"

    def cosign_line(self, text: str, timestamp: int) -> str:
        sig = self._signer.sign(cosigned_message(text, timestamp))
        return f"{EM_DASH} {self.name} {b64(self.verifier.id + timestamp.to_bytes(8, 'big') + sig)}\n"


def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


# --- notes -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: bytes
    sig: bytes     # after the key id
    line: str      # the whole line, with its newline


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)


def parse_signature_lines(block: str) -> list[Signature]:
    if not block:
        return []
    if not block.endswith("\n"):
        raise NoteMalformed("signature lines must end in a newline")
    sigs = []
    for line in block[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise NoteMalformed("signature line does not start with an em dash and a space")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise NoteMalformed("signature line is not '— name signature'")
        name, sig = fields
        _check_name(name)
        raw = unb64(sig, "signature")
        if len(raw) < 5:
            raise NoteMalformed("signature shorter than a key id")
        sigs.append(Signature(name, raw[:4], raw[4:], line + "\n"))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteMalformed(f"more than {MAX_SIGNATURES} signatures")
    return sigs


def parse_note(data: str | bytes) -> Note:
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteMalformed(f"{len(data)} bytes, limit {MAX_NOTE_BYTES}")
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteMalformed("not UTF-8") from None
    if not isinstance(data, str):
        raise NoteMalformed("not text")
    if len(data.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteMalformed(f"longer than {MAX_NOTE_BYTES} bytes")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteMalformed("not valid UTF-8 text") from None
    if any(c < " " and c != "\n" for c in data):
        raise NoteMalformed("control character")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteMalformed("no blank line before the signatures")
    text, block = data[:split + 1], data[split + 2:]
    sigs = parse_signature_lines(block)
    if not sigs:
        raise NoteMalformed("no signatures")
    return Note(text, tuple(sigs))


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    if not text.endswith("\n"):
        raise NoteMalformed("note text must end in a newline")
    return text + "\n" + "".join(s.sign_line(text) for s in signers)


def verify_signature(note: Note, sig: Signature, key: Verifier) -> bool:
    """One signature line against one key (name and id must match). Cosignatures (0x04)
    carry a timestamp before the Ed25519 signature."""
    if sig.name != key.name or sig.key_id != key.id:
        return False
    if key.sig_type == COSIG_TYPE:
        if len(sig.sig) != 8 + 64:
            return False
        t = int.from_bytes(sig.sig[:8], "big")
        return t < 1 << 63 and key.verify(sig.sig[8:], cosigned_message(note.text, t))
    return len(sig.sig) == 64 and key.verify(sig.sig, note.text.encode())


def cosignature_time(sig: Signature) -> int | None:
    return int.from_bytes(sig.sig[:8], "big") if len(sig.sig) == 72 else None


def matching(note: Note, key: Verifier) -> list[Signature]:
    return [s for s in note.signatures if s.name == key.name and s.key_id == key.id]


# --- checkpoints ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        return "".join(line + "\n" for line in (self.origin, str(self.size), b64(self.root), *self.extensions))


def parse_checkpoint_text(text: str) -> LogCheckpoint:
    if not text.endswith("\n"):
        raise NoteMalformed("checkpoint text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteMalformed("checkpoint needs origin, size and root lines")
    origin, size, root, *ext = lines
    if not origin:
        raise NoteMalformed("empty origin")
    if not (size.isascii() and size.isdigit()) or (size != "0" and size.startswith("0")) or len(size) > 19:
        raise NoteMalformed(f"bad tree size {size[:24]!r}")
    n = int(size)
    if n > (1 << 63) - 1:
        raise NoteMalformed("tree size too large")
    h = unb64(root, "root hash")
    if len(h) != 32:
        raise NoteMalformed("root hash is not 32 bytes")
    if any(not line for line in ext):
        raise NoteMalformed("empty extension line")
    return LogCheckpoint(origin, n, h, tuple(ext))


def open_checkpoint(data: str | bytes, log_key: Verifier) -> tuple[LogCheckpoint, Note]:
    """Parse a checkpoint note and verify the log's signature; raises NoteMalformed."""
    note = parse_note(data)
    cp = parse_checkpoint_text(note.text)
    if cp.origin != log_key.name:
        raise NoteMalformed(f"origin {cp.origin[:80]!r} is not the log key's name {log_key.name!r}")
    mine = matching(note, log_key)
    if not mine:
        raise NoteMalformed("no signature by the log's key")
    if not all(verify_signature(note, s, log_key) for s in mine):
        raise NoteMalformed("the log's signature does not verify")
    return cp, note
