"""The shared, I/O-free core: records, Merkle tree, COSE checkpoints, chain, verifier.

Imported by the agent and the collector alike; does no I/O (no sockets, files or clocks).
"""

from . import checkpoint, cose, keys, merkle, record
from .chain import ChainState, Sealed, Sealer
from .checkpoint import Checkpoint, genesis_hash, message_hash
from .errors import VerifyError, VeritrailError
from .export import StreamReport, Trust, read_export, verify_stream, write_export
from .keys import PublicKey, generate_signer, load_signer
from .verify import EVICTED, KeyInfo, Outcome, VerifyState, apply_rotation, bridge, check, eviction_of

__all__ = [
    "EVICTED", "ChainState", "Checkpoint", "KeyInfo", "Outcome", "PublicKey", "Sealed", "Sealer",
    "StreamReport", "Trust", "VerifyError", "VerifyState", "VeritrailError", "apply_rotation",
    "bridge", "check", "checkpoint", "cose", "eviction_of", "generate_signer", "genesis_hash",
    "keys", "load_signer", "merkle", "message_hash", "read_export", "record", "verify_stream",
    "write_export",
]
