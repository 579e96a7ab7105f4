"""The collector's transparency log: every accepted device checkpoint is a leaf (DESIGN §6.1).

    log.py      batch integration into stored tiles, signed checkpoints, the log's key
    routes.py   /log/checkpoint, /log/tile/..., and the evidence routes (FastAPI router factory)
    audit.py    `veritrail log verify|cosign`: an auditor's consistency check, a witness round
    witness.py  `veritrail witness`: a minimal c2sp.org/tlog-witness with its own key

The formats and proofs themselves are pure and live in agent/core (tlog.py, note.py), so
auditors and devices can check them without the collector's dependencies.
"""

from .log import LogIntegrator, TransparencyLog, log_signer, store_node

__all__ = ["LogIntegrator", "TransparencyLog", "log_signer", "store_node"]
