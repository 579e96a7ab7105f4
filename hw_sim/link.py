"""What a simulated device calls to reach its agent: the firmware shim's three verbs.

    record(api, src=..., sub=..., st=..., lat=..., rq=..., rs=..., **extra)   every call
    check(command, args, src, sub=None) -> Verdict                               remote commands
    update(**state)                                                             twin values

Models (`charger.py`, `vehicle.py`) take a ``DeviceLink`` and never know which one:

- ``ShimLink`` (in ``hw_sim.wiring``) is the real ``firmware_shim`` talking to a real agent
  over its socket; that is what the CLI, the report and the demo use.
- ``RecordingLink`` below allows everything and keeps what it saw: a fake beside the real
  one, for unit tests of the models alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    v: str                      # allow | alert | block | defer
    rules: tuple[str, ...] = ()
    seq: int | None = None      # seq of the agent's `cmd` record
    why: str | None = None
    source: str = "agent"       # "agent", or the shim's fail policy ("fail_open"/"fail_closed")

    @property
    def refused(self) -> bool:
        return self.v in ("block", "defer")


ALLOW = Verdict(v="allow", source="none")


class DeviceLink(Protocol):
    def record(self, api: str, **fields: Any) -> None: ...

    def check(self, command: str, args: dict[str, Any], src: dict[str, Any],
              sub: str | None = None) -> Verdict: ...

    def update(self, **state: Any) -> None: ...


@dataclass
class RecordingLink:
    """Allow-all fake that remembers every call (tests of the models without an agent)."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checks: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # command -> forced verdict

    def record(self, api: str, **fields: Any) -> None:
        self.records.append((api, fields))

    def check(self, command: str, args: dict[str, Any], src: dict[str, Any],
              sub: str | None = None) -> Verdict:
        self.checks.append((command, dict(args), dict(src), sub))
        return self.verdicts.get(command, ALLOW)

    def update(self, **state: Any) -> None:
        self.state.update(state)
