"""Rule packs: TOML files of rules (DESIGN §7), loaded and compiled once.

A pack is::

    [pack]
    name = "ocpp-charger"           # unique per bundle
    device_class = ["charger"]      # which devices load it: charger, tcu
    [params]                        # signed policy values, visible to rules as dev.<name>
    csms_hosts = ["csms.example.net"]
    [[rule]]
    id = "CP-01"  title = "..."  on = ["ocpp.UnlockConnector"]  when = '''...'''
    severity = "high"  action = "block"  enforce_safe = true  refs = ["..."]
    why = "short reason"            # optional, default: title
    window = { count = 3, within = "60m", by = "src.id" }   # optional
    cooldown = "30m"                # optional: an alert-only rule fires at most once per cooldown

Anything else is an error naming the rule, the line and the reason.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import functions as F
from .errors import RuleLoadError
from .expr import Compiled, Fn, compile_when

SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("alert", "block", "defer")
DEVICE_CLASSES = ("charger", "tcu")
PACKS_DIR = Path(__file__).parent / "packs"
DEFAULT_PACKS: dict[str, tuple[str, ...]] = {
    "charger": ("ocpp_charger.toml", "general.toml"),
    "tcu": ("tcu.toml", "general.toml"),
}
MAX_PACK_BYTES = 256 * 1024
MAX_RULES = 512
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")
_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RULE_KEYS = {"id", "title", "on", "when", "severity", "action", "enforce_safe", "refs", "why", "window", "cooldown",
              "scope"}
# scope: "all" (default): remote commands and local events/api records matching `on`;
#        "commands": remote commands only (e.g. replay or token checks that only make sense on them)
SCOPES = ("all", "commands")


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    count: int
    within_ms: int
    by: Fn
    by_src: str
    site: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    id: str
    title: str
    on: tuple[str, ...]
    on_match: Callable[[Any], bool]
    when_src: str
    when: Compiled
    severity: str
    action: str
    enforce_safe: bool
    refs: tuple[str, ...]
    why: str
    window: Window | None
    cooldown_ms: int | None
    source: str
    line: int | None
    scope: str = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pack:
    name: str
    device_classes: tuple[str, ...]
    params: dict[str, Any]
    rules: tuple[Rule, ...]
    source: str
    text: str


def parse_duration(value: Any, *, what: str = "duration") -> int:
    """'500ms', '30s', '10m', '6h', '3.5d', '1w' or an int of ms -> ms."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _DUR_RE.match(value)
        if m:
            ms = int(float(m.group(1)) * _UNIT_MS[m.group(2)])
            if ms > 0:
                return ms
    raise ValueError(f"{what} must be like '10m', '6h', '3d' or a positive int of ms, got {value!r}")


def _rule_lines(text: str) -> list[tuple[int, int | None]]:
    """For each [[rule]] in order: (line of the header, line where `when` starts)."""
    lines = text.splitlines()
    headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*rule\s*\]\]", ln)]
    out = []
    for n, start in enumerate(headers):
        end = headers[n + 1] if n + 1 < len(headers) else len(lines)
        when_line = None
        for i in range(start, end):
            m = re.match(r"^\s*when\s*=\s*('''|\"\"\"|'|\")?(.*)$", lines[i])
            if m:
                multiline_break = m.group(1) in ("'''", '"""') and not m.group(2).strip()
                when_line = i + 1 + (1 if multiline_break else 0)
                break
        out.append((start + 1, when_line))
    return out


def _params(raw: Any, source: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RuleLoadError("[params] must be a table", source=source)
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, list):
            v = tuple(v)
        elif isinstance(v, dict):
            raise RuleLoadError(f"params.{k}: nested tables are not supported", source=source)
        out[k] = v
    return out


def load_pack_text(text: str, source: str = "<pack>") -> Pack:
    if len(text.encode("utf-8", "replace")) > MAX_PACK_BYTES:
        raise RuleLoadError(f"pack larger than {MAX_PACK_BYTES} bytes", source=source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleLoadError(f"TOML: {exc}", source=source) from None
    unknown = set(doc) - {"pack", "params", "rule"}
    if unknown:
        raise RuleLoadError(f"unknown top-level table(s): {', '.join(sorted(unknown))}", source=source)
    head = doc.get("pack")
    if not isinstance(head, dict) or not isinstance(head.get("name"), str) or not head["name"]:
        raise RuleLoadError("[pack] with a name is required", source=source)
    classes = head.get("device_class", list(DEVICE_CLASSES))
    if isinstance(classes, str):
        classes = [classes]
    if not (isinstance(classes, list) and classes and all(c in DEVICE_CLASSES for c in classes)):
        raise RuleLoadError(f"pack.device_class must be a list of {DEVICE_CLASSES}", source=source)
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RULES:
        raise RuleLoadError(f"[[rule]] must be an array of at most {MAX_RULES} tables", source=source)
    lines = _rule_lines(text)
    rules = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        header_line, when_line = lines[i] if i < len(lines) else (None, None)
        rule = _load_rule(raw, source, header_line, when_line)
        if rule.id in seen:
            raise RuleLoadError("duplicate rule id", rule_id=rule.id, line=header_line, source=source)
        seen.add(rule.id)
        rules.append(rule)
    return Pack(name=head["name"], device_classes=tuple(classes), params=_params(doc.get("params"), source),
                rules=tuple(rules), source=source, text=text)


def load_pack_file(path: str | Path) -> Pack:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleLoadError(f"cannot read pack: {type(exc).__name__}", source=str(p)) from None
    return load_pack_text(text, source=p.name)


def default_pack_paths(device_class: str) -> list[Path]:
    if device_class not in DEFAULT_PACKS:
        raise ValueError(f"device_class must be one of {DEVICE_CLASSES}, got {device_class!r}")
    return [PACKS_DIR / name for name in DEFAULT_PACKS[device_class]]


def _load_rule(raw: Any, source: str, header_line: int | None, when_line: int | None) -> Rule:
    rid = raw.get("id") if isinstance(raw, dict) else None
    def fail(reason: str, line: int | None = header_line) -> RuleLoadError:
        return RuleLoadError(reason, rule_id=rid if isinstance(rid, str) else None, line=line, source=source)

    if not isinstance(raw, dict):
        raise fail("a rule must be a table")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise fail("id must be 1-40 letters, digits, '_', '.', '-'")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise fail(f"unknown key(s): {', '.join(sorted(unknown))}")
    title = raw.get("title")
    if not isinstance(title, str) or not title:
        raise fail("title is required")
    on = raw.get("on")
    if isinstance(on, str):
        on = [on]
    if not (isinstance(on, list) and on and all(isinstance(o, str) and o for o in on)):
        raise fail("on must be a non-empty list of operation globs")
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        raise fail(f"severity must be one of {SEVERITIES}")
    action = raw.get("action", "alert")
    if action not in ACTIONS:
        raise fail(f"action must be one of {ACTIONS}")
    enforce_safe = raw.get("enforce_safe", False)
    if not isinstance(enforce_safe, bool):
        raise fail("enforce_safe must be true or false")
    if enforce_safe and action == "alert":
        raise fail("enforce_safe only makes sense with action block or defer")
    refs = raw.get("refs")
    if not (isinstance(refs, list) and refs and all(isinstance(r, str) and r for r in refs)):
        raise fail("refs must be a non-empty list of references")
    why = raw.get("why", title)
    if not isinstance(why, str):
        raise fail("why must be a string")
    when_src = raw.get("when")
    if not isinstance(when_src, str):
        raise fail("when (an expression string) is required")
    compiled = compile_when(when_src, rule_id=rid, line=when_line, source_name=source)
    window = None
    if "window" in raw:
        window = _load_window(raw["window"], rid, source, header_line, fail)
    cooldown = None
    if "cooldown" in raw:
        if action != "alert":
            raise fail("cooldown only applies to alert rules (a block must never be skipped)")
        try:
            cooldown = parse_duration(raw["cooldown"], what="cooldown")
        except ValueError as exc:
            raise fail(str(exc)) from None
    scope = raw.get("scope", "all")
    if scope not in SCOPES:
        raise fail(f"scope must be one of {SCOPES}")
    return Rule(id=rid, title=title, on=tuple(on), on_match=F.glob_matcher(tuple(on)), when_src=when_src,
                when=compiled, severity=severity, action=action, enforce_safe=enforce_safe, refs=tuple(refs),
                why=why, window=window, cooldown_ms=cooldown, source=source, line=header_line, scope=scope)


def _load_window(w: Any, rid: str, source: str, line: int | None, fail: Callable[..., RuleLoadError]) -> Window:
    if not isinstance(w, dict) or set(w) - {"count", "within", "by"}:
        raise fail("window must be a table with count, within and optional by")
    count = w.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 4096:
        raise fail("window.count must be an integer 1..4096")
    try:
        within = parse_duration(w.get("within"), what="window.within")
    except ValueError as exc:
        raise fail(str(exc)) from None
    by_src = w.get("by", "''")
    if not isinstance(by_src, str):
        raise fail("window.by must be an expression string")
    by = compile_when(by_src, rule_id=rid, line=line, source_name=source)
    if by.sites:
        raise fail("window.by cannot use memory helpers")
    return Window(count=count, within_ms=within, by=by.fn, by_src=by_src, site=f"{rid}|window")


def merge_params(packs: Iterable[Pack]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in packs:
        for k, v in p.params.items():
            if k in params and params[k] != v:
                raise RuleLoadError(f"params.{k} is set differently by two packs", source=p.source)
            params[k] = v
    return params
