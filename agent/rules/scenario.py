"""Scenario files: timed twin updates, remote commands and local events, replayed against
packs (format: agent/rules/scenarios/README.md). hw_sim reuses ``load_scenario``.

A scenario names the rule it exercises and whether it is an ``attack`` (the rule must fire
on at least one step) or ``benign`` (it must fire on none).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from .errors import ScenarioError

DEFAULT_START = "2025-01-06T00:00:00Z"   # a Monday, 00:00 UTC
MAX_EVENTS = 20_000
_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_STEP_KEYS = {"at", "update", "cmd", "args", "src", "sub", "event", "repeat", "every", "expect"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    at_ms: int
    update: dict[str, Any] | None
    cmd: dict[str, Any] | None
    event: bool
    expect: str | None
    index: int            # position in the file (for messages)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    rule: str
    kind: str             # attack | benign
    device_class: str
    title: str
    start_ms: int
    steps: tuple[Step, ...]   # expanded (repeats unrolled) and in time order
    source: str


@dataclass(slots=True)
class Outcome:
    scenario: Scenario
    fired: dict[str, int] = field(default_factory=dict)        # rule id -> times fired
    lines: list[str] = field(default_factory=list)             # one per judged step
    expect_failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        hit = self.scenario.rule in self.fired
        ok = hit if self.scenario.kind == "attack" else not hit
        return ok and not self.expect_failures


def duration_ms(value: Any, what: str) -> int:
    """'90s', '2d3h', '500ms' or an int of ms; 0 allowed."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        parts = _DUR.findall(value.replace(" ", ""))
        if parts and "".join(n + u for n, u in parts) == value.replace(" ", ""):
            return int(sum(float(n) * _UNIT[u] for n, u in parts))
    raise ValueError(f"{what}: expected a duration like '10m' or '2d3h', got {value!r}")


def _fill(value: Any, i: int) -> Any:
    """Per-repetition substitution: '{i}' becomes the repetition index; '$fill:N:TEXT'
    becomes TEXT repeated to N characters (for big payloads without big files)."""
    if isinstance(value, str):
        if value.startswith("$fill:"):
            _, n, text = value.split(":", 2)
            return (text * (int(n) // max(1, len(text)) + 1))[: int(n)]
        return value.replace("{i}", str(i))
    if isinstance(value, dict):
        return {k: _fill(v, i) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, i) for v in value]
    return value


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read: {type(exc).__name__}", p.name) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"TOML: {exc}", p.name) from None
    return parse_scenario(doc, p.name)


def parse_scenario(doc: dict[str, Any], source: str = "<scenario>") -> Scenario:
    def fail(reason: str) -> ScenarioError:
        return ScenarioError(reason, source)

    unknown = set(doc) - {"rule", "kind", "device_class", "title", "start", "defaults", "step"}
    if unknown:
        raise fail(f"unknown key(s): {', '.join(sorted(unknown))}")
    rule, kind, dc = doc.get("rule"), doc.get("kind"), doc.get("device_class")
    if not isinstance(rule, str) or kind not in ("attack", "benign") or dc not in ("charger", "tcu"):
        raise fail("rule (str), kind (attack|benign) and device_class (charger|tcu) are required")
    try:
        start = int(datetime.fromisoformat(str(doc.get("start", DEFAULT_START)).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise fail("start must be an ISO-8601 UTC time") from None
    defaults = doc.get("defaults", {})
    dsrc = defaults.get("src", {}) if isinstance(defaults, dict) else {}
    dsub = defaults.get("sub") if isinstance(defaults, dict) else None
    raw_steps = doc.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise fail("at least one [[step]] is required")
    expanded: list[Step] = []
    for n, raw in enumerate(raw_steps):
        if not isinstance(raw, dict) or set(raw) - _STEP_KEYS:
            raise fail(f"step {n + 1}: unknown keys {sorted(set(raw) - _STEP_KEYS) if isinstance(raw, dict) else ''}")
        if "update" not in raw and "cmd" not in raw:
            raise fail(f"step {n + 1}: needs update and/or cmd")
        try:
            at = duration_ms(raw.get("at", 0), f"step {n + 1} at")
            repeat = raw.get("repeat", 1)
            every = duration_ms(raw.get("every", 0), f"step {n + 1} every")
        except ValueError as exc:
            raise fail(str(exc)) from None
        if not isinstance(repeat, int) or not 1 <= repeat <= MAX_EVENTS or (repeat > 1 and every <= 0):
            raise fail(f"step {n + 1}: repeat must be 1..{MAX_EVENTS} (with every > 0 when > 1)")
        for i in range(repeat):
            cmd = None
            if "cmd" in raw:
                cmd = {"cmd": raw["cmd"], "args": _fill(raw.get("args", {}), i),
                       "src": _fill({**dsrc, **raw.get("src", {})}, i),
                       "sub": _fill(raw.get("sub", dsub), i)}
            expanded.append(Step(at_ms=at + i * every, update=_fill(raw["update"], i) if "update" in raw else None,
                                 cmd=cmd, event=bool(raw.get("event", False)), expect=raw.get("expect"), index=n + 1))
            if len(expanded) > MAX_EVENTS:
                raise fail(f"more than {MAX_EVENTS} steps after expanding repeats")
    expanded.sort(key=lambda s: (s.at_ms, s.index))
    return Scenario(rule=rule, kind=kind, device_class=dc, title=str(doc.get("title", "")), start_ms=start,
                    steps=tuple(expanded), source=source)


def replay(scenario: Scenario, engine: Any) -> Outcome:
    """Run every step through ``engine`` (fresh, in the mode the caller chose)."""
    out = Outcome(scenario)
    for step in scenario.steps:
        now = scenario.start_ms + step.at_ms
        fired: Iterable[str] = ()
        if step.update is not None:
            fired = [a.rule_id for a in engine.update_twin(step.update, now)]
            _count(out, fired, now, "twin.update", "alert" if fired else "allow", scenario.start_ms)
        if step.cmd is not None:
            j = engine.observe(step.cmd, now) if step.event else engine.judge(step.cmd, now)
            _count(out, j.rule_ids, now, step.cmd["cmd"], j.verdict, scenario.start_ms)
            if step.expect is not None and j.verdict != step.expect:
                out.expect_failures.append(f"step {step.index} at +{step.at_ms} ms: expected {step.expect}, got {j.verdict}")
    return out


def _count(out: Outcome, fired: Iterable[str], now: int, op: str, verdict: str, start: int) -> None:
    fired = tuple(fired)
    for r in fired:
        out.fired[r] = out.fired.get(r, 0) + 1
    if fired or verdict != "allow":
        out.lines.append(f"+{_fmt(now - start):>10}  {op:<34} {verdict:<6} {','.join(fired)}")


def _fmt(ms: int) -> str:
    s = ms // 1000
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + f"{h:02d}:{m:02d}:{s:02d}"
