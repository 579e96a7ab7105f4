"""`veritrail bench rules [--quick] --json`.

Judges remote commands against the full default packs with warm state (memory filled by
replaying every shipped scenario first) and reports p50/p99 µs per judgement. In the same
run, the *same* `when` expressions of the rules that apply to each command are evaluated
with the `rule-engine` package and with `cel-python`: each expression is translated from
our AST into the peer's syntax, helper calls (count, since, glob, twin[...], ...) become peer
functions backed by the same implementations over a copy of the same warm state, and the
inputs are the same command dicts. Peers pay their own value conversion at the boundary
(Decimal for rule-engine, celtypes for CEL) because that is what using them costs.
Expressions a peer cannot evaluate on an input (null comparisons raise in both) are
counted in ``peer_*_errors``; the work up to the error is still timed.
"""

from __future__ import annotations

import ast
import copy
import gc
import statistics
import time
from decimal import Decimal
from typing import Any, Callable, Sequence

from . import functions as F
from .engine import load_engine
from .expr import CONSTANTS, compile_when, keystr
from .memory import hour_of_week

T0 = 1_736_157_600_000  # 2025-01-06T10:00:00Z
COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("charger", {"cmd": "ocpp.UnlockConnector", "args": {"connector_id": 1}, "src": {"id": "csms", "net": "10.0.0.5"}, "sub": "1"}),
    ("charger", {"cmd": "ocpp.RemoteStartTransaction", "args": {"connector_id": 1, "id_tag": "TAG42"}, "src": {"id": "csms"}, "sub": "1"}),
    ("charger", {"cmd": "ocpp.ChangeConfiguration", "args": {"key": "HeartbeatInterval", "value": "300"}, "src": {"id": "csms"}}),
    ("tcu", {"cmd": "tcu.door_unlock", "args": {}, "src": {"id": "owner-app", "role": "owner"}, "sub": "WVWZZZ1JZXW000001"}),
    ("tcu", {"cmd": "tcu.locate", "args": {}, "src": {"id": "owner-app", "role": "owner"}, "sub": "WVWZZZ1JZXW000001"}),
]
TWIN = {"charger": {"tx.active": False, "connector.1.cp_state": "B", "connector.1.current_a": 0.0,
                    "connector.1.status": "Preparing", "security.profile": 2},
        "tcu": {"vehicle.speed": 0.0, "vehicle.gear": "P", "vehicle.key_present": True}}


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    n_ours = 3_000 if quick else 30_000
    n_peer = 60 if quick else 400
    engines = {dc: _warm(dc, progress) for dc in ("charger", "tcu")}
    ours = _time_ours(engines, n_ours, progress)
    re_us, re_err, cel_us, cel_err, n_expr = _time_peers(engines, n_peer, progress)
    p50 = statistics.median(ours)
    faster = min(re_us, cel_us)
    return {
        "p50_us": round(p50, 2), "p99_us": round(_pct(ours, 99), 2), "judgements": len(ours),
        "peer_rule_engine_p50_us": round(re_us, 1), "peer_cel_python_p50_us": round(cel_us, 1),
        "peer_rule_engine_errors": re_err, "peer_cel_python_errors": cel_err,
        "expressions_per_command": round(n_expr / len(COMMANDS), 2),
        "ratio_to_faster_peer": round(faster / p50, 1), "quick": quick,
    }


def _warm(dc: str, progress: Callable[[str], None]) -> Any:
    from .scenario import load_scenario
    from .packs import PACKS_DIR
    engine = load_engine(device_class=dc, mode="enforce")
    n = 0
    for path in sorted((PACKS_DIR.parent / "scenarios").glob("*.toml")):
        sc = load_scenario(path)
        if sc.device_class != dc:
            continue
        for step in sc.steps:  # every scenario shifted to end before T0: warm windows and sets
            now = T0 - 40 * 86_400_000 + step.at_ms
            if step.update:
                engine.update_twin(step.update, now)
            if step.cmd:
                (engine.observe if step.event else engine.judge)(step.cmd, now)
                n += 1
    progress(f"rules bench: {dc} engine warmed with {n} scenario operations, {len(engine.rules)} rules")
    return engine


def _time_ours(engines: dict[str, Any], n: int, progress: Callable[[str], None]) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            dc, command = COMMANDS[i % len(COMMANDS)]
            now = T0 + i * 10
            engine = engines[dc]
            if i % 100 < len(COMMANDS):
                engine.update_twin(TWIN[dc], now)   # keep safety values fresh (outside the timing)
            t = clock()
            engine.judge(command, now)
            samples.append((clock() - t) / 1000)
    finally:
        gc.enable()
    progress(f"rules bench: ours p50 {statistics.median(samples):.2f} µs over {n} judgements")
    return samples


def _pct(xs: list[float], p: int) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


# -- peers ---------------------------------------------------------------------------
def _time_peers(engines: dict[str, Any], n: int, progress: Callable[[str], None]) -> tuple[float, int, float, int, int]:
    import celpy
    import rule_engine
    re_samples: list[float] = []
    cel_samples: list[float] = []
    errors = {"re": 0, "cel": 0}
    n_expr = 0
    clock = time.perf_counter_ns
    for dc, command in COMMANDS:
        engine = engines[dc]
        rules = [r for r in engine.rules if r.on_match(command["cmd"])]
        n_expr += len(rules)
        peers = []
        for kind in ("re", "cel"):
            state = _PeerState(engine)
            compiled = [_translate(ast.parse(f"(\n{r.when_src}\n)", mode="eval").body, r.id, kind, state) for r in rules]
            if kind == "re":
                ctx = rule_engine.Context(default_value=None)
                progs = [rule_engine.Rule(src, context=ctx) for src in compiled]
                evaluate: Callable[[Any, Any], Any] = lambda prog, data: prog.evaluate(data)
            else:
                env = celpy.Environment()
                progs = [env.program(env.compile(src), functions=state.functions_cel()) for src in compiled]
                evaluate = lambda prog, data: prog.evaluate(data)
            peers.append((kind, state, progs, evaluate))
        for kind, state, progs, evaluate in peers:
            samples = re_samples if kind == "re" else cel_samples
            for i in range(n):
                now = T0 + i * 10
                state.twin.update(TWIN[dc], now)
                t = clock()
                state.now = now
                data = state.activation(command, now)
                for prog in progs:
                    try:
                        evaluate(prog, data)
                    except Exception:   # noqa: BLE001 - a peer's own evaluation error, counted
                        errors[kind] += 1
                samples.append((clock() - t) / 1000)
        progress(f"rules bench: {command['cmd']}: {len(rules)} expressions; rule-engine "
                 f"{statistics.median(re_samples[-n:]):.0f} µs, cel-python {statistics.median(cel_samples[-n:]):.0f} µs")
    return (statistics.median(re_samples), errors["re"], statistics.median(cel_samples), errors["cel"], n_expr)


def _plain(v: Any) -> Any:
    """Peer value -> plain Python value (what our helpers take)."""
    if v is None or type(v) in (str, int, float, bool):
        return v
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() and v.is_finite() else float(v)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return None


class _PeerState:
    """A copy of the engine's warm twin and memory, with helpers as peer functions."""

    def __init__(self, engine: Any) -> None:
        self.twin = copy.deepcopy(engine.twin)
        self.mem = copy.deepcopy(engine.memory)
        self.dev = engine._rs.params
        self.utc_ms = int(self.dev.get("utc_offset_min", 0) or 0) * 60_000
        self.now = 0
        self.funcs: dict[str, Callable[..., Any]] = {}
        self.kind = "re"
        self._dev_cel: Any = None

    def add(self, name: str, fn: Callable[..., Any]) -> str:
        key = f"f{len(self.funcs)}_{name}"
        self.funcs[key] = fn
        return key

    def activation(self, command: dict[str, Any], now: int) -> Any:
        base = {"cmd": command["cmd"], "args": command.get("args") or {}, "src": command.get("src") or {},
                "sub": command.get("sub") or "", "dev": self.dev, "now": now}
        if self.kind == "re":
            return {**base, **self.funcs}
        import celpy
        if self._dev_cel is None:   # constant policy: converted once, not per command
            self._dev_cel = celpy.json_to_cel(_jsonable(self.dev))
        out = {k: celpy.json_to_cel(_jsonable(v)) for k, v in base.items() if k != "dev"}
        out["dev"] = self._dev_cel
        return out

    def functions_cel(self) -> dict[str, Callable[..., Any]]:
        import celpy
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            return lambda *a: celpy.json_to_cel(_jsonable(fn(*a)))
        return {k: wrap(f) for k, f in self.funcs.items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def _translate(node: ast.AST, rule_id: str, kind: str, st: _PeerState) -> str:
    """Our AST -> rule-engine (kind 're') or CEL source; helpers become peer functions."""
    st.kind = kind
    cel = kind == "cel"

    def lit(v: Any) -> str:
        if v is None:
            return "null"
        if v is True or v is False:
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(float(v)) if cel else repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (tuple, list, frozenset)):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        raise ValueError(f"literal {v!r}")

    def call(name: str, fn: Callable[..., Any], args: Sequence[ast.AST]) -> str:
        key = st.add(name, lambda *a: fn(*[_plain(x) for x in a]))
        return f"{key}(" + ", ".join(t(a) for a in args) + ")"

    def chain(node: ast.AST) -> tuple[str, list[Any]] | None:
        path: list[Any] = []
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Attribute):
                path.append(node.attr)
            elif isinstance(node.slice, ast.Constant):
                path.append(node.slice.value)
            else:
                return None
            node = node.value
        if isinstance(node, ast.Name) and node.id in ("args", "src", "dev"):
            return node.id, path[::-1]
        return None

    def t(n: ast.AST, boolean: bool = False) -> str:
        if isinstance(n, ast.BoolOp) and not boolean:
            # a value-context `a or b` (Python returns an operand): the peers' and/or return
            # booleans, so these become a function with Python's semantics
            is_and = isinstance(n.op, ast.And)
            def pick(*vals: Any) -> Any:
                r = None
                for r in vals:
                    if (not r) if is_and else r:
                        return r
                return r
            key = st.add("and_" if is_and else "or_", lambda *a: pick(*[_plain(x) for x in a]))
            return f"{key}(" + ", ".join(t(v) for v in n.values) + ")"
        if isinstance(n, ast.Constant):
            return lit(n.value)
        if isinstance(n, ast.Name):
            if n.id in CONSTANTS:
                return lit(CONSTANTS[n.id])
            return n.id
        if isinstance(n, (ast.Tuple, ast.List)):
            return "[" + ", ".join(t(e) for e in n.elts) + "]"
        if isinstance(n, ast.BoolOp):
            op = (" && " if cel else " and ") if isinstance(n.op, ast.And) else (" || " if cel else " or ")
            return "(" + op.join(t(v, True) for v in n.values) + ")"
        if isinstance(n, ast.UnaryOp):
            if isinstance(n.op, ast.Not):
                return f"(!{t(n.operand, True)})" if cel else f"(not {t(n.operand, True)})"
            return f"(-{t(n.operand)})"
        if isinstance(n, ast.BinOp):
            ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
            return f"({t(n.left)} {ops[type(n.op)]} {t(n.right)})"
        if isinstance(n, ast.IfExp):
            return f"({t(n.test, True)} ? {t(n.body)} : {t(n.orelse)})"
        if isinstance(n, ast.Compare):
            parts = []
            left = n.left
            for cop, right in zip(n.ops, n.comparators):
                a, b = t(left), t(right)
                cmp: Any = cop
                if isinstance(cmp, (ast.Is, ast.IsNot)):
                    parts.append(f"({a} {'==' if isinstance(cmp, ast.Is) else '!='} null)")
                elif isinstance(cmp, ast.In):
                    parts.append(f"({a} in {b})")
                elif isinstance(cmp, ast.NotIn):
                    parts.append(f"(!({a} in {b}))" if cel else f"({a} not in {b})")
                else:
                    sym = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}[type(cmp)]
                    parts.append(f"({a} {sym} {b})")
                left = right
            return "(" + (" && " if cel else " and ").join(parts) + ")"
        if isinstance(n, (ast.Attribute, ast.Subscript)):
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "twin":
                return call("twin", lambda k: st.twin.get(F.text(k), st.now), [n.slice])
            ch = chain(n)
            if ch is None:
                raise ValueError(f"{rule_id}: cannot translate {ast.unparse(n)}")
            root, path = ch
            if cel:   # CEL errors on a missing map key: look it up through a function
                def dig(obj: Any, *keys: Any) -> Any:
                    for k in keys:
                        obj = obj.get(k) if isinstance(obj, dict) else None
                    return obj
                key = st.add("dig", lambda obj, *k: dig(_plain(obj), *[_plain(x) for x in k]))
                return f"{key}({root}, " + ", ".join(lit(p) for p in path) + ")"
            return root + "".join(f"&.{p}" if isinstance(p, str) else f"&[{p}]" for p in path)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            return _translate_call(n, rule_id, st, t, call)
        raise ValueError(f"{rule_id}: cannot translate {type(n).__name__}")

    return t(node, True)


def _translate_call(n: ast.Call, rule_id: str, st: _PeerState, t: Callable[[ast.AST], str],
                    call: Callable[[str, Callable[..., Any], Sequence[ast.AST]], str]) -> str:
    name = n.func.id  # type: ignore[attr-defined]
    site = f"{rule_id}|{ast.unparse(n)}"
    kw = {k.arg: k.value for k in n.keywords}
    pos = list(n.args)

    def const(x: ast.AST | None, default: Any = None) -> Any:
        return default if x is None else compile_when(ast.unparse(x), rule_id="bench").fn(None)  # type: ignore[arg-type]

    empty = ast.Constant("")
    if name in F.PURE:
        return call(name, F.PURE[name][0], pos)
    if name == "age":
        return call(name, lambda k: st.twin.age_ms(F.text(k), st.now), pos)
    if name == "raw":
        return call(name, lambda k: st.twin.raw(F.text(k)), pos)
    if name == "hour":
        return call(name, lambda: ((st.now + st.utc_ms) % 86_400_000) // 3_600_000, [])
    if name == "hour_of_week":
        return call(name, lambda: hour_of_week(st.now + st.utc_ms), [])
    if name == "count":
        within = const(pos[0] if pos else kw["within"])
        by = pos[1] if len(pos) > 1 else kw.get("by", empty)
        return call(name, lambda b: st.mem.count(site, keystr(b), st.now, int(within)), [by])
    if name == "decayed":
        hl = const(pos[0] if pos else kw["half_life"])
        by = pos[1] if len(pos) > 1 else kw.get("by", empty)
        inc = kw.get("inc", ast.Constant(1))
        return call(name, lambda b, i: st.mem.decayed(site, keystr(b), st.now, int(hl), i), [by, inc])
    if name == "first_seen":
        ttl = const(pos[1] if len(pos) > 1 else kw["ttl"])
        return call(name, lambda v: st.mem.first_seen(site, keystr(v), st.now, int(ttl)), [pos[0]])
    if name == "known_for":
        return call(name, lambda v: st.mem.known_for(site, keystr(v), st.now), [pos[0]])
    if name == "since":
        by = pos[1] if len(pos) > 1 else kw.get("by", empty)
        return call(name, lambda b: st.mem.since(site, keystr(b), st.now), [by])
    if name == "unusual":
        p = {k: const(kw.get(k), d) for k, d in (("warmup", 14 * 86_400_000), ("hold", 86_400_000),
                                                  ("min_count", 20), ("floor", 3), ("min_mass", 0.01))}
        return call(name, lambda b: st.mem.unusual(site, keystr(b), st.now, utc_offset_min=st.utc_ms // 60_000,
                                                   warmup_ms=p["warmup"], min_count=p["min_count"], floor=p["floor"],
                                                   hold_ms=p["hold"], min_mass=p["min_mass"]),
                    [kw.get("by", empty)])
    raise ValueError(f"{rule_id}: no peer translation for {name}()")

