"""Errors of the agent daemon (the core's errors live in agent/core/errors.py).

    AgentError
    ├── ConfigError(option, value, reason)      a config value or file that cannot be used
    ├── NotInitialised(path)                    no config/keys/spool where they should be
    ├── StateLost(reason)                       the chain state cannot be recovered safely
    ├── SpoolError(reason)                      SQLite refused an operation (translated)
    │   └── SpoolCorrupt(reason)                the spool file itself is damaged
    ├── ReceiptMismatch(cp, upto_seq, reason)   a collector receipt that does not match our chain
    └── StatusUnavailable(reason)               `agent status` could not reach the daemon or spool

Foreign errors (sqlite3, OSError, tomllib) are translated where they enter.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent daemon raises."""


class ConfigError(AgentError):
    def __init__(self, option: str, value: object, reason: str) -> None:
        shown = value if isinstance(value, (int, float, bool)) or value is None else repr(str(value)[:80])
        super().__init__(f"config {option} = {shown}: {reason}")
        self.option = option
        self.value = value
        self.reason = reason


class NotInitialised(AgentError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path} not found (run 'veritrail agent init --device-id ID' first)")
        self.path = path


class StateLost(AgentError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"chain state lost: {reason}")
        self.reason = reason


class SpoolError(AgentError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"spool: {reason}")
        self.reason = reason


class SpoolCorrupt(SpoolError):
    pass


class ReceiptMismatch(AgentError):
    """A receipt whose checkpoint hash (or range) differs from our own: nothing is deleted."""

    def __init__(self, cp: int, upto_seq: int, reason: str) -> None:
        super().__init__(f"receipt for checkpoint {cp} (upto seq {upto_seq}) refused: {reason}")
        self.cp = cp
        self.upto_seq = upto_seq
        self.reason = reason


class StatusUnavailable(AgentError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"status unavailable: {reason}")
        self.reason = reason
