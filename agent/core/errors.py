"""Errors of the shared core.

    VeritrailError
    ├── RecordError
    │   ├── RecordMalformed(reason)          bytes that are not a record
    │   └── RecordInvalid(field, reason)     a record whose fields break §2
    ├── CoseMalformed(reason)                not a COSE_Sign1 message we accept
    ├── CheckpointMalformed(reason)          a COSE message whose payload is not a checkpoint
    ├── KeyStoreError(reason)                key files missing, unreadable or with bad mode
    ├── LibcryptoUnavailable(reason)         no usable system libcrypto (the cryptography fallback is used)
    ├── LibcryptoError(call)                 a libcrypto call failed on input it had accepted
    ├── ExportMalformed(reason)              an export file that cannot be read
    ├── LogFormatError(reason)               transparency-log bytes from outside that we refuse (tlog.py, note.py)
    │   ├── NoteMalformed / TileMalformed / ProofMalformed / EntryMalformed
    │   └── EvidenceMalformed(reason)        an evidence bundle that cannot be read (evidence.py)
    └── VerifyError(cp, seq)                 the chain does not verify; exactly one per failure
        ├── BadSignature(kid)
        ├── UnknownKey(kid)
        ├── KeyRevoked(kid)
        ├── KeyRetired(kid)
        ├── BadForwardTag()
        ├── DeviceMismatch(expected, got)
        ├── BootRollback(previous, got)
        ├── CheckpointGap(expected_cp, got_cp)
        ├── SeqGap(expected_seq, got_seq)
        ├── ChainBroken()                    prev_cp is not the hash of the previous checkpoint
        ├── RecordSeqMismatch(expected_seq, got_seq)
        ├── RecordBootMismatch(expected, got)
        ├── CountMismatch(expected, got)
        ├── RootMismatch()
        ├── RecordUndecodable(reason)
        ├── Replayed()                       a checkpoint already accepted, sent again
        └── Fork(first_hash, second_hash)    two different checkpoints with one number

Every VerifyError carries ``cp`` (checkpoint number, when known) and ``seq`` (the
record seq where the problem is, when known), so a report can say exactly where.
"""

from __future__ import annotations


class VeritrailError(Exception):
    """Base of every error the core raises."""


class RecordError(VeritrailError):
    pass


class RecordMalformed(RecordError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed record: {reason}")
        self.reason = reason


class RecordInvalid(RecordError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid record field {field!r}: {reason}")
        self.field = field
        self.reason = reason


class CoseMalformed(VeritrailError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed COSE_Sign1: {reason}")
        self.reason = reason


class CheckpointMalformed(VeritrailError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed checkpoint: {reason}")
        self.reason = reason


class KeyStoreError(VeritrailError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"key store: {reason}")
        self.reason = reason


class ExportMalformed(VeritrailError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed export: {reason}")
        self.reason = reason


class LogFormatError(VeritrailError):
    """Bytes of the transparency log or an evidence bundle that are refused; ``what`` names the format."""

    what = "log data"

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed {self.what}: {reason}")
        self.reason = reason


class NoteMalformed(LogFormatError):
    what = "signed note"


class TileMalformed(LogFormatError):
    what = "tile"


class ProofMalformed(LogFormatError):
    what = "proof"


class EntryMalformed(LogFormatError):
    what = "log entry"


class EvidenceMalformed(LogFormatError):
    what = "evidence bundle"


class VerifyError(VeritrailError):
    """The chain does not verify. ``code`` is a stable short name for reports and APIs."""

    code = "verify"

    def __init__(self, detail: str, *, cp: int | None = None, seq: int | None = None) -> None:
        where = []
        if cp is not None:
            where.append(f"checkpoint {cp}")
        if seq is not None:
            where.append(f"seq {seq}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{detail}")
        self.detail = detail
        self.cp = cp
        self.seq = seq


class BadSignature(VerifyError):
    code = "bad_signature"

    def __init__(self, kid: str, **where: int | None) -> None:
        super().__init__(f"signature does not verify with key {kid!r}", **where)
        self.kid = kid


class UnknownKey(VerifyError):
    code = "unknown_key"

    def __init__(self, kid: str, **where: int | None) -> None:
        super().__init__(f"key id {kid!r} is not registered for this device", **where)
        self.kid = kid


class KeyRevoked(VerifyError):
    code = "key_revoked"

    def __init__(self, kid: str, **where: int | None) -> None:
        super().__init__(f"key id {kid!r} is revoked for this checkpoint", **where)
        self.kid = kid


class KeyRetired(VerifyError):
    code = "key_retired"

    def __init__(self, kid: str, **where: int | None) -> None:
        super().__init__(f"key id {kid!r} was retired by a rotation before this checkpoint", **where)
        self.kid = kid


class BadForwardTag(VerifyError):
    code = "bad_fs_tag"

    def __init__(self, **where: int | None) -> None:
        super().__init__("forward-secure tag does not match", **where)


class DeviceMismatch(VerifyError):
    code = "device_mismatch"

    def __init__(self, expected: str, got: str, **where: int | None) -> None:
        super().__init__(f"checkpoint is for device {got!r}, expected {expected!r}", **where)
        self.expected = expected
        self.got = got


class BootRollback(VerifyError):
    code = "boot_rollback"

    def __init__(self, previous: int, got: int, **where: int | None) -> None:
        super().__init__(f"boot epoch went back from {previous} to {got}", **where)
        self.previous = previous
        self.got = got


class CheckpointGap(VerifyError):
    code = "checkpoint_gap"

    def __init__(self, expected_cp: int, got_cp: int, **where: int | None) -> None:
        super().__init__(f"expected checkpoint {expected_cp}, got {got_cp}", **where)
        self.expected_cp = expected_cp
        self.got_cp = got_cp


class SeqGap(VerifyError):
    code = "seq_gap"

    def __init__(self, expected_seq: int, got_seq: int, **where: int | None) -> None:
        super().__init__(f"range starts at seq {got_seq}, expected {expected_seq}", **where)
        self.expected_seq = expected_seq
        self.got_seq = got_seq


class ChainBroken(VerifyError):
    code = "chain_broken"

    def __init__(self, **where: int | None) -> None:
        super().__init__("prev_cp is not the hash of the previous checkpoint", **where)


class RecordSeqMismatch(VerifyError):
    code = "record_seq"

    def __init__(self, expected_seq: int, got_seq: object, **where: int | None) -> None:
        super().__init__(f"record has seq {got_seq!r}, expected {expected_seq}", **where)
        self.expected_seq = expected_seq
        self.got_seq = got_seq


class RecordBootMismatch(VerifyError):
    code = "record_boot"

    def __init__(self, expected: int, got: object, **where: int | None) -> None:
        super().__init__(f"record has boot {got!r}, checkpoint says {expected}", **where)
        self.expected = expected
        self.got = got


class CountMismatch(VerifyError):
    code = "count_mismatch"

    def __init__(self, expected: int, got: int, **where: int | None) -> None:
        super().__init__(f"checkpoint covers {expected} records, {got} given", **where)
        self.expected = expected
        self.got = got


class RootMismatch(VerifyError):
    code = "root_mismatch"

    def __init__(self, **where: int | None) -> None:
        super().__init__("records do not hash to the checkpoint's Merkle root", **where)


class RecordUndecodable(VerifyError):
    code = "record_undecodable"

    def __init__(self, reason: str, **where: int | None) -> None:
        super().__init__(f"record cannot be decoded: {reason}", **where)
        self.reason = reason


class Replayed(VerifyError):
    code = "replayed"

    def __init__(self, **where: int | None) -> None:
        super().__init__("checkpoint was already accepted (replay)", **where)


class Fork(VerifyError):
    code = "fork"

    def __init__(self, first_hash: bytes, second_hash: bytes, **where: int | None) -> None:
        super().__init__(
            f"two different checkpoints with the same number ({first_hash.hex()[:16]}… vs "
            f"{second_hash.hex()[:16]}…)",
            **where,
        )
        self.first_hash = first_hash
        self.second_hash = second_hash


class LibcryptoUnavailable(VeritrailError):
    """No usable libcrypto: not found, a symbol missing, or the self-test failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"libcrypto Ed25519 unavailable: {reason}")
        self.reason = reason


class LibcryptoError(VeritrailError):
    """A libcrypto call failed where it cannot fail on good input (a key it accepted)."""

    def __init__(self, call: str) -> None:
        super().__init__(f"libcrypto {call} failed")
        self.call = call
