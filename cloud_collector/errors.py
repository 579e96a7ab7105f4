"""Errors of the collector (the core's live in agent/core/errors.py).

    CollectorError
    ├── ConfigError(option, value, reason)   a config value or file that cannot be used
    ├── StoreError(reason)                   the database refused an operation (translated)
    ├── RegistryError(reason)                enroll/revoke that cannot be done
    └── Rejected(reason)                     an MQTT message not accepted; ``reason`` is the counter name
"""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises."""


class ConfigError(CollectorError):
    def __init__(self, option: str, value: object, reason: str) -> None:
        shown = value if isinstance(value, (int, float, bool)) or value is None else repr(str(value)[:80])
        super().__init__(f"config {option} = {shown}: {reason}")
        self.option, self.value, self.reason = option, value, reason


class StoreError(CollectorError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"store: {reason}")
        self.reason = reason


class RegistryError(CollectorError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"registry: {reason}")
        self.reason = reason


class Rejected(CollectorError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"rejected ({reason}){': ' + detail if detail else ''}")
        self.reason, self.detail = reason, detail
