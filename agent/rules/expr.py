"""The `when` expression language: a safe subset of Python expressions.

``compile_when(source, rule_id=..., ...)`` parses with stdlib ``ast``, checks every node
against a whitelist, and builds a tree of closures once; evaluation is a plain call
``fn(env)``, no ``eval``/``exec`` and no code objects. Anything not whitelisted (unknown
name or function, attribute walking, comprehensions, lambdas, f-strings, slices, bit
shifts, big exponents, too deep or too large expressions) raises ``RuleLoadError`` with
the rule id, the line and the reason. Work per evaluation is bounded: no loops exist in
the language, collections are literals of at most 256 items, integers stay under 2**256,
strings under 64 KiB. The reference of names and helpers is agent/rules/README.md.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Callable

from . import functions as F
from .errors import RuleEvalError, RuleLoadError
from .memory import DAY_MS, HOUR_MS, hour_of_week
from .ops import (_BINOPS, _NUM, MAX_INT, Env, _cmp, _get, _index, _neg, _ordered_const, _pow,  # noqa: F401
                  keystr)

MAX_SOURCE_CHARS = 4000
MAX_NESTING = 32          # brackets, checked before parsing
MAX_DEPTH = 40            # AST depth
MAX_NODES = 400
MAX_COLLECTION = 256
MAX_POW_EXPONENT = 64
MAX_CONST_STR = 4096
MAX_WINDOW_MS = 400 * DAY_MS

NAMES = ("cmd", "args", "src", "sub", "twin", "dev", "now")
CONSTANTS: dict[str, Any] = {"MS": 1, "SEC": 1000, "MIN": 60_000, "HOUR": HOUR_MS, "DAY": DAY_MS,
                             "WEEK": 7 * DAY_MS, "inf": math.inf}
_MAPPING_ROOTS = ("args", "src", "dev")

Fn = Callable[["Env"], Any]


@dataclass(frozen=True, slots=True)
class Observer:
    """Notes the time of every operation matching ``match`` (for ``since``)."""
    site: str
    match: Callable[[Any], bool]
    by: Fn
    where: Fn | None


@dataclass(frozen=True, slots=True)
class Compiled:
    fn: Fn
    observers: tuple[Observer, ...]
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _C:
    fn: Fn
    const: bool = False
    value: Any = None


def _const(v: Any) -> _C:
    return _C(lambda e: v, True, v)


# -- helpers with the environment or state ------------------------------------------------
_STATE_PARAMS: dict[str, tuple[tuple[str, ...], int]] = {
    # name: (parameter names, number required)
    "count": (("within", "by"), 1),
    "decayed": (("half_life", "by", "inc"), 1),
    "first_seen": (("value", "ttl"), 2),
    "known_for": (("value",), 1),
    "since": (("pattern", "by", "where"), 1),
    "unusual": (("by", "warmup", "min_count", "floor", "hold", "min_mass"), 0),
}
_ENV_HELPERS = {"age": 1, "raw": 1, "hour": 0, "hour_of_week": 0}

_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Compare, ast.IfExp, ast.Constant,
    ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.List, ast.Tuple, ast.Set, ast.keyword,
    ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Eq, ast.NotEq, ast.Lt, ast.LtE,
    ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
    *_BINOPS.keys(),
)
_REFUSED_NAMES = {
    ast.ListComp: "comprehensions are not allowed", ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed", ast.GeneratorExp: "comprehensions are not allowed",
    ast.Lambda: "lambda is not allowed", ast.NamedExpr: "assignment (:=) is not allowed",
    ast.JoinedStr: "f-strings are not allowed; use key() or '+'", ast.Starred: "* unpacking is not allowed",
    ast.Slice: "slices are not allowed", ast.Dict: "dict literals are not allowed",
    ast.Await: "await is not allowed",
}


def _nesting(source: str) -> int:
    depth = deepest = 0
    quote = ""
    i = 0
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
        i += 1
    return deepest


def compile_when(source: str, *, rule_id: str, line: int | None = None, source_name: str | None = None) -> Compiled:
    """Compile one `when` expression; ``line`` is the file line where it starts."""
    return _Compiler(rule_id, line, source_name).compile(source)


class _Compiler:
    def __init__(self, rule_id: str, line: int | None, source_name: str | None) -> None:
        self.rule_id = rule_id
        self.line = line
        self.source_name = source_name
        self.observers: list[Observer] = []
        self.sites: list[str] = []
        self.in_state_helper = False

    def fail(self, reason: str, node: object | None = None) -> RuleLoadError:
        line = self.line
        lineno = getattr(node, "lineno", None)
        if line is not None and lineno is not None:
            line += max(0, lineno - 2)
        return RuleLoadError(reason, rule_id=self.rule_id, line=line, source=self.source_name)

    def compile(self, source: str) -> Compiled:
        if not isinstance(source, str) or not source.strip():
            raise self.fail("`when` must be a non-empty string")
        if len(source) > MAX_SOURCE_CHARS:
            raise self.fail(f"expression is {len(source)} characters, limit {MAX_SOURCE_CHARS}")
        if _nesting(source) > MAX_NESTING:
            raise self.fail(f"expression nests brackets deeper than {MAX_NESTING}")
        try:
            # wrapped in brackets so an expression may span lines; line 1 is the "("
            tree = ast.parse(f"(\n{source}\n)", mode="eval")
        except SyntaxError as exc:
            raise self.fail(f"syntax error: {exc.msg}", exc) from None
        except (RecursionError, MemoryError, ValueError) as exc:
            raise self.fail(f"expression refused by the parser ({type(exc).__name__})") from None
        self._check_shape(tree)
        c = self.visit(tree.body)
        return Compiled(c.fn, tuple(self.observers), tuple(self.sites))

    def _check_shape(self, tree: ast.AST) -> None:
        count = 0
        stack: list[tuple[ast.AST, int]] = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > MAX_NODES:
                raise self.fail(f"expression has more than {MAX_NODES} nodes")
            if depth > MAX_DEPTH:
                raise self.fail(f"expression nests deeper than {MAX_DEPTH}", node)
            if type(node) in _REFUSED_NAMES:
                raise self.fail(_REFUSED_NAMES[type(node)], node)
            if not isinstance(node, _ALLOWED_NODES):
                raise self.fail(f"{type(node).__name__} is not allowed", node)
            step = 0 if isinstance(node, (ast.expr_context, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)) else 1
            stack.extend((child, depth + step) for child in ast.iter_child_nodes(node))

    # -- dispatch ----------------------------------------------------------------------
    def visit(self, node: ast.AST) -> _C:
        method = getattr(self, "v_" + type(node).__name__, None)
        if method is None:
            raise self.fail(f"{type(node).__name__} is not allowed", node)
        return method(node)

    def v_Constant(self, node: ast.Constant) -> _C:
        v = node.value
        if v is None or type(v) in (bool, float):
            return _const(v)
        if type(v) is int:
            if not -MAX_INT < v < MAX_INT:
                raise self.fail("integer constant too large", node)
            return _const(v)
        if type(v) is str:
            if len(v) > MAX_CONST_STR:
                raise self.fail(f"string constant longer than {MAX_CONST_STR}", node)
            return _const(v)
        raise self.fail(f"constant of type {type(v).__name__} is not allowed", node)

    def v_Name(self, node: ast.Name) -> _C:
        n = node.id
        if n in CONSTANTS:
            return _const(CONSTANTS[n])
        if n == "twin":
            raise self.fail("twin is only usable as twin['key']", node)
        if n == "cmd":
            return _C(lambda e: e.cmd)
        if n == "args":
            return _C(lambda e: e.args)
        if n == "src":
            return _C(lambda e: e.src)
        if n == "sub":
            return _C(lambda e: e.sub)
        if n == "dev":
            return _C(lambda e: e.dev)
        if n == "now":
            return _C(lambda e: e.now)
        if n in F.PURE or n in _STATE_PARAMS or n in _ENV_HELPERS:
            raise self.fail(f"{n} is a function; call it", node)
        raise self.fail(f"unknown name {n!r}", node)

    def _mapping_root(self, node: ast.AST) -> bool:
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return isinstance(node, ast.Name) and node.id in _MAPPING_ROOTS

    def v_Attribute(self, node: ast.Attribute) -> _C:
        attr = node.attr
        if attr.startswith("_"):
            raise self.fail(f"attribute {attr!r}: names starting with '_' are not allowed", node)
        if not self._mapping_root(node.value):
            raise self.fail(f"attribute .{attr} is only allowed on args, src and dev", node)
        base = node.value
        if isinstance(base, ast.Name):
            if base.id == "args":
                return _C(lambda e: e.args.get(attr))
            if base.id == "src":
                return _C(lambda e: e.src.get(attr))
            return _C(lambda e: e.dev.get(attr))
        v = self.visit(base).fn
        return _C(lambda e: _get(v(e), attr))

    def v_Subscript(self, node: ast.Subscript) -> _C:
        k = self.visit(node.slice)
        if isinstance(node.value, ast.Name) and node.value.id == "twin":
            if k.const:
                key = k.value
                if not isinstance(key, str):
                    raise self.fail("twin keys are strings", node)
                return _C(lambda e: e.twin.get(key, e.now))
            kf = k.fn
            return _C(lambda e: e.twin.get(F.text(kf(e)), e.now))
        if not self._mapping_root(node.value):
            raise self.fail("[...] is only allowed on twin, args, src and dev", node)
        v = self.visit(node.value).fn
        if k.const:
            kv = k.value
            return _C(lambda e: _index(v(e), kv))
        kf = k.fn
        return _C(lambda e: _index(v(e), kf(e)))

    def v_BoolOp(self, node: ast.BoolOp) -> _C:
        parts = [self.visit(v) for v in node.values]
        fns = [p.fn for p in parts]
        is_and = isinstance(node.op, ast.And)
        if len(fns) == 2:
            a, b = fns
            fn: Fn = (lambda e: a(e) and b(e)) if is_and else (lambda e: a(e) or b(e))
        elif len(fns) == 3:
            a, b, c = fns
            fn = (lambda e: a(e) and b(e) and c(e)) if is_and else (lambda e: a(e) or b(e) or c(e))
        else:
            tfns = tuple(fns)

            def fn(e: Env) -> Any:
                r: Any = None
                for f in tfns:
                    r = f(e)
                    if (not r) if is_and else r:
                        return r
                return r
        return self._fold(node, fn, parts)

    def v_UnaryOp(self, node: ast.UnaryOp) -> _C:
        a = self.visit(node.operand)
        af = a.fn
        if isinstance(node.op, ast.Not):
            fn: Fn = lambda e: not af(e)
        elif isinstance(node.op, ast.USub):
            fn = lambda e: _neg(af(e))
        else:
            fn = lambda e: _neg(_neg(af(e)))
        return self._fold(node, fn, [a])

    def v_BinOp(self, node: ast.BinOp) -> _C:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed", node)
        a, b = self.visit(node.left), self.visit(node.right)
        if op is _pow:
            if not b.const or type(b.value) not in _NUM or abs(b.value) > MAX_POW_EXPONENT:
                raise self.fail(f"'**' needs a constant exponent of at most {MAX_POW_EXPONENT}", node)
        af, bf = a.fn, b.fn
        if b.const:
            bv = b.value
            fn: Fn = lambda e: op(af(e), bv)
        else:
            fn = lambda e: op(af(e), bf(e))
        return self._fold(node, fn, [a, b])

    def v_Compare(self, node: ast.Compare) -> _C:
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.Is, ast.IsNot)) and not (isinstance(right, ast.Constant) and right.value is None):
                raise self.fail("'is' / 'is not' only compare with None", node)
        left = self.visit(node.left)
        rights = [self.visit(r) for r in node.comparators]
        for op, r in zip(node.ops, rights):
            if isinstance(op, (ast.In, ast.NotIn)) and r.const and isinstance(r.value, tuple):
                try:
                    frozen = frozenset(r.value)
                except TypeError:
                    continue
                rights[rights.index(r)] = _C(r.fn, True, frozen)
        if len(rights) == 1:
            fn = self._compare1(node.ops[0], left.fn, rights[0])
        else:
            cmps = tuple(_cmp(type(op)) for op in node.ops)
            fns = (left.fn, *(r.fn for r in rights))

            def fn(e: Env) -> bool:
                a = fns[0](e)
                for c, f in zip(cmps, fns[1:]):
                    b = f(e)
                    if not c(a, b):
                        return False
                    a = b
                return True
        return self._fold(node, fn, [left, *rights])

    @staticmethod
    def _compare1(op: ast.cmpop, af: Fn, right: _C) -> Fn:
        t = type(op)
        if right.const:
            bv = right.value
            if t is ast.Eq:
                return lambda e: af(e) == bv
            if t is ast.NotEq:
                return lambda e: af(e) != bv
            if t is ast.Is:
                return lambda e: af(e) is None
            if t is ast.IsNot:
                return lambda e: af(e) is not None
            if t in (ast.In, ast.NotIn) and type(bv) is frozenset:
                neg = t is ast.NotIn

                def f_in(e: Env) -> bool:
                    try:
                        r = af(e) in bv
                    except TypeError:
                        r = False
                    return not r if neg else r
                return f_in
            if t in (ast.Gt, ast.GtE, ast.Lt, ast.LtE):
                return _ordered_const(t, af, bv)
        c = _cmp(t)
        bf = right.fn
        return lambda e: c(af(e), bf(e))

    def v_IfExp(self, node: ast.IfExp) -> _C:
        t, a, b = self.visit(node.test), self.visit(node.body), self.visit(node.orelse)
        tf, af, bf = t.fn, a.fn, b.fn
        return self._fold(node, lambda e: af(e) if tf(e) else bf(e), [t, a, b])

    def _collection(self, node: ast.List | ast.Tuple | ast.Set) -> list[_C]:
        if len(node.elts) > MAX_COLLECTION:
            raise self.fail(f"more than {MAX_COLLECTION} items in a literal", node)
        return [self.visit(x) for x in node.elts]

    def v_List(self, node: ast.List) -> _C:
        return self.v_Tuple(node)  # type: ignore[arg-type]

    def v_Tuple(self, node: ast.Tuple) -> _C:
        items = self._collection(node)
        if all(i.const for i in items):
            return _const(tuple(i.value for i in items))
        fns = tuple(i.fn for i in items)
        return _C(lambda e: tuple(f(e) for f in fns))

    def v_Set(self, node: ast.Set) -> _C:
        items = self._collection(node)
        if not all(i.const for i in items):
            raise self.fail("set literals must be constant", node)
        try:
            return _const(frozenset(i.value for i in items))
        except TypeError:
            raise self.fail("set items must be hashable", node) from None

    def _fold(self, node: ast.AST, fn: Fn, parts: list[_C]) -> _C:
        if parts and all(p.const for p in parts):
            try:
                return _const(fn(None))  # type: ignore[arg-type]
            except RuleEvalError as exc:
                raise self.fail(exc.reason, node) from None
        return _C(fn)

    # -- calls ---------------------------------------------------------------------
    def v_Call(self, node: ast.Call) -> _C:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only the documented helper functions can be called", node)
        name = node.func.id
        if name in _STATE_PARAMS:
            return self._state_call(name, node)
        if node.keywords:
            raise self.fail(f"{name}() takes no keyword arguments", node)
        if name in _ENV_HELPERS:
            return self._env_call(name, node)
        spec = F.PURE.get(name)
        if spec is None:
            raise self.fail(f"unknown function {name!r}", node)
        func, lo, hi = spec
        if not lo <= len(node.args) <= hi:
            raise self.fail(f"{name}() takes {lo}..{hi} arguments, got {len(node.args)}", node)
        args = [self.visit(a) for a in node.args]
        if name in ("glob", "cidr") and args[1].const:
            try:
                m = F.glob_matcher(args[1].value) if name == "glob" else F.cidr_const(args[1].value)
            except (TypeError, ValueError) as exc:
                raise self.fail(f"{name}() pattern: {exc}", node) from None
            a0 = args[0].fn
            return self._fold(node, lambda e: m(a0(e)), args[:1])
        fns = [a.fn for a in args]
        if len(fns) == 1:
            f0 = fns[0]
            fn: Fn = lambda e: func(f0(e))
        elif len(fns) == 2:
            f0, f1 = fns
            fn = lambda e: func(f0(e), f1(e))
        else:
            tf = tuple(fns)
            fn = lambda e: func(*[f(e) for f in tf])
        return self._fold(node, fn, args)

    def _env_call(self, name: str, node: ast.Call) -> _C:
        if len(node.args) != _ENV_HELPERS[name]:
            raise self.fail(f"{name}() takes {_ENV_HELPERS[name]} arguments", node)
        if name == "hour":
            return _C(lambda e: ((e.now + e.utc_offset_ms) % DAY_MS) // HOUR_MS)
        if name == "hour_of_week":
            return _C(lambda e: hour_of_week(e.now + e.utc_offset_ms))
        k = self.visit(node.args[0])
        if k.const and not isinstance(k.value, str):
            raise self.fail(f"{name}() takes a twin key string", node)
        kf = (lambda e: k.value) if k.const else (lambda e: F.text(k.fn(e)))
        if name == "age":
            return _C(lambda e: e.twin.age_ms(kf(e), e.now))
        return _C(lambda e: e.twin.raw(kf(e)))

    def _bind(self, name: str, node: ast.Call) -> dict[str, ast.expr]:
        params, required = _STATE_PARAMS[name]
        if len(node.args) > len(params):
            raise self.fail(f"{name}() takes at most {len(params)} arguments", node)
        bound = dict(zip(params, node.args))
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in params:
                raise self.fail(f"{name}() has no parameter {kw.arg!r}", node)
            if kw.arg in bound:
                raise self.fail(f"{name}() got {kw.arg!r} twice", node)
            bound[kw.arg] = kw.value
        missing = [p for p in params[:required] if p not in bound]
        if missing:
            raise self.fail(f"{name}() needs {', '.join(missing)}", node)
        return bound

    def _const_param(self, name: str, param: str, node: ast.expr | None, default: Any, kind: str) -> Any:
        if node is None:
            return default
        c = self.visit(node)
        if not c.const:
            raise self.fail(f"{name}({param}=...) must be a constant", node)
        v = c.value
        if kind == "ms":
            if type(v) not in _NUM or not 0 < v <= MAX_WINDOW_MS:
                raise self.fail(f"{name}({param}=...) must be a duration in ms, 0 < ms <= 400 days", node)
            return int(v)
        if kind == "num":
            if type(v) not in _NUM or v < 0:
                raise self.fail(f"{name}({param}=...) must be a non-negative number", node)
            return v
        if kind == "patterns":
            if isinstance(v, str):
                v = (v,)
            if not (isinstance(v, tuple) and v and all(isinstance(p, str) for p in v)):
                raise self.fail(f"{name}({param}=...) must be a glob string or a list of them", node)
            return v
        raise AssertionError(kind)

    def _state_call(self, name: str, node: ast.Call) -> _C:
        if self.in_state_helper:
            raise self.fail(f"{name}() cannot be nested inside another memory helper", node)
        b = self._bind(name, node)
        site = f"{self.rule_id}|{ast.unparse(node)}"
        self.sites.append(site)
        self.in_state_helper = True
        try:
            by = self.visit(b["by"]).fn if "by" in b else (lambda e: "")
            if name == "count":
                within = self._const_param(name, "within", b["within"], None, "ms")
                return _C(lambda e: e.mem.count(site, keystr(by(e)), e.now, within))
            if name == "decayed":
                hl = self._const_param(name, "half_life", b["half_life"], None, "ms")
                inc = self.visit(b["inc"]) if "inc" in b else _const(1)
                incf = inc.fn

                def fn_decayed(e: Env) -> float:
                    i = incf(e)
                    if type(i) not in _NUM:
                        raise RuleEvalError("decayed(inc=...) must be a number")
                    return e.mem.decayed(site, keystr(by(e)), e.now, hl, i)
                return _C(fn_decayed)
            if name == "first_seen":
                vf = self.visit(b["value"]).fn
                ttl = self._const_param(name, "ttl", b["ttl"], None, "ms")
                return _C(lambda e: e.mem.first_seen(site, keystr(vf(e)), e.now, ttl))
            if name == "known_for":
                kv = self.visit(b["value"]).fn
                return _C(lambda e: e.mem.known_for(site, keystr(kv(e)), e.now))
            if name == "since":
                pats = self._const_param(name, "pattern", b["pattern"], None, "patterns")
                where = self.visit(b["where"]).fn if "where" in b else None
                self.observers.append(Observer(site, F.glob_matcher(pats), by, where))
                return _C(lambda e: e.mem.since(site, keystr(by(e)), e.now))
            # unusual
            p = {k: self._const_param(name, k, b.get(k), d, kind) for k, d, kind in (
                ("warmup", 14 * DAY_MS, "ms"), ("hold", DAY_MS, "ms"), ("min_count", 20, "num"),
                ("floor", 3, "num"), ("min_mass", 0.01, "num"))}

            def fn_unusual(e: Env) -> bool:
                return e.mem.unusual(site, keystr(by(e)), e.now, utc_offset_min=e.utc_offset_ms // 60_000,
                                     warmup_ms=p["warmup"], min_count=p["min_count"], floor=p["floor"],
                                     hold_ms=p["hold"], min_mass=p["min_mass"])
            return _C(fn_unusual)
        finally:
            self.in_state_helper = False
