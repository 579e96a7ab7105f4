"""The rules engine: judges remote commands against the loaded rule set.

``judge(command, now_ms)`` evaluates the rules whose ``on`` globs match the command name
(an index per name, built on first use), then notes the command for sequence helpers,
and returns a ``Judgement``. The clock is never read: every time is passed in.

Verdicts: the strongest fired action wins (block > defer > alert > allow). A rule may only
block or defer when it is ``enforce_safe``, the engine runs in ``enforce`` mode, the
operation is a remote command (not an observed event or twin update) and the command is
not a safety path (``commands.NEVER_REFUSE``); otherwise its verdict is ``alert``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from agent.twin import Twin

from . import state as files
from .commands import NEVER_REFUSE, refusal_for
from .errors import BundleRejected, RuleEvalError, RuleLoadError, StateError
from .expr import Env, Observer, keystr
from .memory import STATE_FORMAT, Memory
from .packs import Pack, Rule, default_pack_paths, load_pack_file, load_pack_text, merge_params

MODES = ("monitor", "enforce")
_RANK = {"allow": 0, "alert": 1, "defer": 2, "block": 3}
MAX_INDEX = 1024
MAX_NAME = 128
_EVAL_ERRORS = (RuleEvalError, TypeError, ValueError, OverflowError, ZeroDivisionError, RecursionError)


@dataclass(frozen=True, slots=True)
class Alert:
    rule_id: str
    severity: str
    title: str


@dataclass(slots=True)
class Judgement:
    verdict: str
    rule_ids: tuple[str, ...]
    bundle_version: int
    alerts: list[Alert] = field(default_factory=list)
    why: str | None = None
    refusal: str | None = None    # the protocol's own answer when verdict is block/defer


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    observers: tuple[Observer, ...]
    params: dict[str, Any]
    packs: tuple[Pack, ...]
    version: int

    @classmethod
    def build(cls, packs: Iterable[Pack], device_class: str, version: int) -> "RuleSet":
        mine = tuple(p for p in packs if device_class in p.device_classes)
        if not mine:
            raise RuleLoadError(f"no pack applies to device class {device_class!r}")
        rules = tuple(r for p in mine for r in p.rules)
        ids = Counter(r.id for r in rules)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise RuleLoadError(f"rule id(s) defined in two packs: {', '.join(sorted(dup))}")
        params = merge_params(mine)
        params["device_class"] = device_class
        observers = tuple(o for r in rules for o in r.when.observers)
        return cls(rules, observers, params, mine, version)

    def sites(self) -> set[str]:
        out = {s for r in self.rules for s in r.when.sites}
        out.update(r.window.site for r in self.rules if r.window)
        return out


class Engine:
    def __init__(self, ruleset: RuleSet, *, device_class: str, mode: str = "monitor",
                 state_path: Path | None = None, bundle_dir: Path | None = None,
                 autosave_every: int = 256, autosave_ms: int = 10_000, autosave_min_ms: int = 1_000,
                 background_save: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.device_class = device_class
        self.mode = mode
        self.state_path = Path(state_path) if state_path else None
        self.bundle_dir = Path(bundle_dir) if bundle_dir else None
        self.autosave_every = autosave_every
        self.autosave_ms = autosave_ms
        self.autosave_min_ms = autosave_min_ms  # under a storm of commands: at most one save per this
        # background_save (the daemon): autosaves are packed here, written by a thread
        self._writer = files.StateWriter(self.state_path) if background_save and self.state_path else None
        self.twin = Twin()
        self.memory = Memory()
        self.counters: Counter[str] = Counter()      # judged, fired, eval errors, drops... by reason
        self.last_bundle_rejection: str | None = None
        self._version_high = ruleset.version
        self._since_save = 0
        self._last_save_ms: int | None = None
        self._restore()
        self._set_ruleset(ruleset)

    # -- rule set ------------------------------------------------------------------
    @property
    def bundle_version(self) -> int:
        return self._rs.version

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rs.rules

    def _set_ruleset(self, rs: RuleSet) -> None:
        env = Env(twin=self.twin, dev=rs.params, mem=self.memory,
                  utc_offset_min=int(rs.params.get("utc_offset_min", 0) or 0))
        self._index: dict[str, tuple[tuple[Rule, ...], tuple[Observer, ...]]] = {}
        self._watch: dict[str, bool] = {}
        self._env = env
        self._rs = rs  # one assignment: the swap is atomic for the next judge()
        self._version_high = max(self._version_high, rs.version)
        self._allow = Judgement("allow", (), rs.version)

    def _lookup(self, name: str) -> tuple[tuple[Rule, ...], tuple[Observer, ...]]:
        hit = self._index.get(name)
        if hit is None:
            rs = self._rs
            hit = (tuple(r for r in rs.rules if r.on_match(name)), tuple(o for o in rs.observers if o.match(name)))
            if len(self._index) < MAX_INDEX:
                self._index[name] = hit
        return hit

    def watches(self, name: str) -> bool:
        """Whether ``observe`` of a local event or api record named ``name`` can matter: some
        sequence helper notes it, or some rule not scoped to commands is on it. Cheap
        (cached per name), so the agent asks for every api record."""
        hit = self._watch.get(name)
        if hit is None:
            rules, observers = self._lookup(name)
            hit = bool(observers) or any(r.scope != "commands" for r in rules)
            if len(self._watch) < MAX_INDEX:
                self._watch[name] = hit
        return hit

    # -- judging -------------------------------------------------------------------
    def judge(self, command: Mapping[str, Any], now_ms: int) -> Judgement:
        """Judge one remote command: {"cmd", "args", "src", "sub"}."""
        return self._judge(command, now_ms, remote=True)

    def observe(self, op: Mapping[str, Any], now_ms: int) -> Judgement:
        """Show the engine a local event or API call (same shape as a command). Rules on it may
        alert and sequence helpers note it; it is never blocked or deferred."""
        return self._judge(op, now_ms, remote=False)

    def update_twin(self, values: Mapping[str, Any], now_ms: int) -> list[Alert]:
        """Store twin readings; rules on ``twin.update`` may alert (e.g. a drive-away)."""
        if not isinstance(values, Mapping):
            self.counters["twin_update_not_a_map"] += 1
            return []
        self.twin.update(values, now_ms)
        return self._judge({"cmd": "twin.update", "args": dict(values)}, now_ms, remote=False).alerts

    def _judge(self, command: Mapping[str, Any], now_ms: int, *, remote: bool) -> Judgement:
        name = command.get("cmd") if isinstance(command, Mapping) else None
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or not isinstance(now_ms, int):
            self.counters["judge_malformed"] += 1
            return Judgement("alert", ("VT-MALFORMED",), self._rs.version,
                             [Alert("VT-MALFORMED", "medium", "malformed command")], "malformed command")
        rules, observers = self._lookup(name)
        e = self._env
        e.cmd = name
        args = command.get("args")
        e.args = args if type(args) is dict else {}
        src = command.get("src")
        e.src = src if type(src) is dict else {}
        sub = command.get("sub")
        e.sub = sub if type(sub) is str else ("" if sub is None else str(sub))
        e.now = now_ms
        fired: list[Rule] | None = None
        for rule in rules:
            if not remote and rule.scope == "commands":
                continue
            try:
                if not rule.when.fn(e):
                    continue
                w = rule.window
                if w is not None and self.memory.count(w.site, keystr(w.by(e)), now_ms, w.within_ms) < w.count:
                    continue
            except _EVAL_ERRORS as exc:
                self.counters[f"eval_error:{rule.id}:{type(exc).__name__}"] += 1
                continue
            if rule.cooldown_ms is not None:
                if not self.memory.cooled(rule.id, now_ms, rule.cooldown_ms):
                    self.counters[f"cooldown_suppressed:{rule.id}"] += 1
                    continue
                self.memory.mark_fired(rule.id, now_ms)
            if fired is None:
                fired = [rule]
            else:
                fired.append(rule)
        for o in observers:
            try:
                if o.where is None or o.where(e):
                    self.memory.note(o.site, keystr(o.by(e)), now_ms)
            except _EVAL_ERRORS as exc:
                self.counters[f"eval_error:{o.site.split('|', 1)[0]}:{type(exc).__name__}"] += 1
        self._since_save += 1
        last = self._last_save_ms
        if self.state_path is not None and (
                (self._since_save >= self.autosave_every and (last is None or now_ms - last >= self.autosave_min_ms))
                or (last is not None and now_ms - last >= self.autosave_ms)):
            self._autosave(now_ms)
        if fired is None:
            return self._allow
        return self._verdict(name, fired, remote)

    def _verdict(self, name: str, fired: list[Rule], remote: bool) -> Judgement:
        may_refuse = remote and self.mode == "enforce" and name not in NEVER_REFUSE
        verdict, why = "alert", None
        for r in fired:
            self.counters[f"fired:{r.id}"] += 1
            if r.action != "alert" and r.enforce_safe and may_refuse and _RANK[r.action] > _RANK[verdict]:
                verdict, why = r.action, r.why
        if why is None:
            why = fired[0].why
        return Judgement(verdict, tuple(r.id for r in fired), self._rs.version,
                         [Alert(r.id, r.severity, r.title) for r in fired], why,
                         refusal_for(name) if verdict in ("block", "defer") else None)

    # -- bundles -------------------------------------------------------------------
    def install_bundle(self, bundle_bytes: bytes, fleet_public_key: Any) -> int:
        """Verify, compile and atomically install a signed bundle; BundleRejected(reason) if not."""
        from .bundle import open_bundle
        try:
            version, _created, texts = open_bundle(bundle_bytes, fleet_public_key)
            current = max(self._rs.version, self._version_high)
            if version <= current:
                raise BundleRejected(f"version {version} is not greater than {current} (replayed or downgraded)")
            rs = _ruleset_from_texts(texts, self.device_class, version)
            if self.bundle_dir is not None:
                try:
                    files.write_bundle(self.bundle_dir, bytes(bundle_bytes))
                except OSError as exc:
                    raise BundleRejected(f"cannot store bundle: {type(exc).__name__}") from None
        except BundleRejected as exc:
            self.counters["bundle_rejected"] += 1
            self.last_bundle_rejection = exc.reason
            raise
        live = rs.sites()
        for table in (self.memory.windows, self.memory.decays, self.memory.seen, self.memory.firsts, self.memory.last, self.memory.baselines):
            for site in [s for s in table if s not in live]:
                del table[site]
        self._set_ruleset(rs)
        self.counters["bundle_installed"] += 1
        if self.state_path is not None:
            self.save_state()
        return version

    # -- state ---------------------------------------------------------------------
    def _restore(self) -> None:
        if self.state_path is None:
            return
        try:
            st = files.load_state(self.state_path)
            if st is None:
                return
            if st.get("format") != STATE_FORMAT:
                raise StateError(f"state format {st.get('format')!r}")
            mem = Memory.from_state(st.get("memory", {}))
            twin_snap = st.get("twin", {})
            if not isinstance(twin_snap, dict):
                raise StateError("twin state is not a map")
            high = st.get("bundle_version_high", 0)
            if not isinstance(high, int):
                raise StateError("bundle_version_high is not an int")
        except StateError as exc:
            self.counters[f"state_unreadable:{exc.reason}"] += 1
            return
        self.memory = mem
        self.twin.restore(twin_snap)
        self._version_high = max(self._version_high, high)

    def _state_bytes(self) -> bytes:
        return files.pack_state({
            "format": STATE_FORMAT, "bundle_version_high": max(self._version_high, self._rs.version),
            "memory": self.memory.to_state(), "twin": self.twin.snapshot()})

    def save_state(self, now_ms: int | None = None) -> None:
        """Write the state now (after any background write still under way)."""
        if self.state_path is None:
            return
        data = self._state_bytes()
        if self._writer is not None:
            self._writer.flush()
        files.save_state(self.state_path, data)
        self._since_save = 0
        if now_ms is not None:
            self._last_save_ms = now_ms

    def _autosave(self, now_ms: int) -> None:
        self._since_save = 0
        self._last_save_ms = now_ms
        if self._writer is not None:
            self._writer.submit(self._state_bytes())  # a snapshot; the fsyncs happen off this thread
            return
        try:
            self.save_state(now_ms)
        except StateError as exc:
            self.counters[f"state_save_failed:{exc.reason}"] += 1

    def close(self) -> None:
        self.save_state()

    def _counters(self) -> dict[str, int]:
        out = dict(self.counters)
        if self._writer is not None:
            for reason, n in list(self._writer.failed.items()):
                out[f"state_save_failed:{reason}"] = out.get(f"state_save_failed:{reason}", 0) + n
        return out

    def status(self) -> dict[str, Any]:
        return {"bundle_version": self._rs.version, "rules": len(self._rs.rules), "mode": self.mode,
                "counters": self._counters(), "twin_dropped": dict(self.twin.dropped),
                "memory_dropped": dict(self.memory.dropped), "last_bundle_rejection": self.last_bundle_rejection}


def _ruleset_from_texts(texts: Mapping[str, str], device_class: str, version: int) -> RuleSet:
    try:
        packs = [load_pack_text(text, source=name) for name, text in sorted(texts.items())]
        return RuleSet.build(packs, device_class, version)
    except RuleLoadError as exc:
        raise BundleRejected(f"rule does not load: {exc}") from None


def load_engine(packs: Iterable[str | Path] | None = None, device_class: str = "charger", mode: str = "monitor",
                state_path: Path | None = None, bundle_dir: Path | None = None,
                fleet_public_key: Any = None, **options: Any) -> Engine:
    """The engine with the installed bundle from ``bundle_dir`` if there is one (re-verified
    when ``fleet_public_key`` is given), else ``packs`` (default: the packs for the class)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    paths = list(packs) if packs is not None else default_pack_paths(device_class)
    ruleset = RuleSet.build([load_pack_file(p) for p in paths], device_class, 0)
    stored_error = None
    if bundle_dir is not None:
        from .bundle import open_bundle
        try:
            message = files.read_bundle(Path(bundle_dir))
            if message is not None:
                version, _, texts = open_bundle(message, fleet_public_key)
                ruleset = _ruleset_from_texts(texts, device_class, version)
        except (BundleRejected, StateError) as exc:
            stored_error = exc.reason
    engine = Engine(ruleset, device_class=device_class, mode=mode, state_path=state_path,
                    bundle_dir=bundle_dir, **options)
    if stored_error is not None:
        engine.counters["stored_bundle_unusable"] += 1
        engine.last_bundle_rejection = f"stored bundle unusable: {stored_error}"
    return engine

