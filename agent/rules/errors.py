"""Errors of the rules package.

    RulesError
    ├── RuleLoadError(rule_id, line, reason, source)   a pack or rule that must not load
    ├── RuleEvalError(reason)                          one evaluation went wrong (counted, rule skipped)
    ├── ScenarioError(reason, source)                  a scenario file that cannot be replayed
    ├── StateError(reason)                             persisted engine state unreadable (engine starts empty, counted)
    └── BundleRejected(reason)                         a rule bundle the device refuses; the old one stays
"""

from __future__ import annotations


class RulesError(Exception):
    """Base of every error the rules package raises."""


class RuleLoadError(RulesError):
    def __init__(self, reason: str, *, rule_id: str | None = None, line: int | None = None,
                 source: str | None = None) -> None:
        self.rule_id = rule_id
        self.line = line
        self.reason = reason
        self.source = source
        where = source or "<pack>"
        if line is not None:
            where += f":{line}"
        who = f" rule {rule_id}:" if rule_id else ""
        super().__init__(f"{where}:{who} {reason}")


class RuleEvalError(RulesError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ScenarioError(RulesError):
    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(f"{source or '<scenario>'}: {reason}")
        self.reason = reason
        self.source = source


class StateError(RulesError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BundleRejected(RulesError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
