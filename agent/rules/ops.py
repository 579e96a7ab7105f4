"""Run-time primitives of the `when` language: the evaluation environment and the safe
operators the compiled closures call (bounded, and total over odd input: ordering with
None is False, arithmetic on non-numbers raises RuleEvalError)."""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from .errors import RuleEvalError

MAX_INT = 2 ** 256
MAX_STR = 65_536


class Env:
    """What one evaluation sees. The engine fills it; rules only read it."""

    __slots__ = ("cmd", "args", "src", "sub", "twin", "dev", "now", "mem", "utc_offset_ms")

    def __init__(self, *, twin: Any, dev: dict[str, Any], mem: Any, utc_offset_min: int = 0) -> None:
        self.cmd = ""
        self.args: dict[str, Any] = {}
        self.src: dict[str, Any] = {}
        self.sub = ""
        self.twin = twin
        self.dev = dev
        self.now = 0
        self.mem = mem
        self.utc_offset_ms = utc_offset_min * 60_000



_NUM = (int, float)


def _get(d: Any, name: str) -> Any:
    return d.get(name) if type(d) is dict else None


def _index(d: Any, k: Any) -> Any:
    if type(d) is dict:
        try:
            return d.get(k)
        except TypeError:
            return None
    if type(d) in (list, tuple) and type(k) is int and -len(d) <= k < len(d):
        return d[k]
    return None


def _check_int(r: Any) -> Any:
    if type(r) is int and not -MAX_INT < r < MAX_INT:
        raise RuleEvalError("integer too large")
    return r


def _nums(a: Any, b: Any, op: str) -> None:
    if type(a) not in _NUM or type(b) not in _NUM:
        raise RuleEvalError(f"'{op}' needs numbers")


def _add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta in _NUM and tb in _NUM:
        return _check_int(a + b)
    if ta is str and tb is str:
        if len(a) + len(b) > MAX_STR:
            raise RuleEvalError("string too long")
        return a + b
    raise RuleEvalError("'+' needs two numbers or two strings")


def _sub(a: Any, b: Any) -> Any:
    _nums(a, b, "-")
    return _check_int(a - b)


def _mul(a: Any, b: Any) -> Any:
    _nums(a, b, "*")
    return _check_int(a * b)


def _div(a: Any, b: Any) -> Any:
    _nums(a, b, "/")
    if b == 0:
        raise RuleEvalError("division by zero")
    return a / b


def _floordiv(a: Any, b: Any) -> Any:
    _nums(a, b, "//")
    if b == 0:
        raise RuleEvalError("division by zero")
    return a // b


def _mod(a: Any, b: Any) -> Any:
    _nums(a, b, "%")
    if b == 0:
        raise RuleEvalError("modulo by zero")
    return a % b


def _pow(a: Any, b: Any) -> Any:
    _nums(a, b, "**")
    if type(a) is int and type(b) is int and b > 0 and a.bit_length() * b > 256:
        raise RuleEvalError("integer too large")
    try:
        return a ** b
    except (OverflowError, ZeroDivisionError):
        raise RuleEvalError("'**' out of range") from None


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add, ast.Sub: _sub, ast.Mult: _mul, ast.Div: _div, ast.FloorDiv: _floordiv,
    ast.Mod: _mod, ast.Pow: _pow,
}


def _neg(a: Any) -> Any:
    if type(a) not in _NUM:
        raise RuleEvalError("unary '-' needs a number")
    return -a


def _cmp(op: Any) -> Callable[[Any, Any], bool]:
    f: Any = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
         ast.Gt: operator.gt, ast.GtE: operator.ge}.get(op)
    if f is not None:
        def c(a: Any, b: Any) -> bool:
            try:
                return f(a, b)
            except TypeError:
                return False
        return c
    if op in (ast.In, ast.NotIn):
        neg = op is ast.NotIn

        def c_in(a: Any, b: Any) -> bool:
            try:
                r = a in b if type(b) in (str, list, tuple, dict, frozenset) else False
            except TypeError:
                r = False
            return (not r) if neg else r
        return c_in
    if op is ast.Is:
        return lambda a, b: a is None
    return lambda a, b: a is not None


def keystr(v: Any) -> str:
    """A window/set key from any value."""
    t = type(v)
    if t is str:
        return v[:256]
    if v is None:
        return ""
    if t in (bool, int, float):
        return repr(v)
    if t in (list, tuple):
        return "|".join(keystr(x) for x in v[:16])[:256]
    return ""



def _ordered_const(t: type, af: Callable[[Any], Any], bv: Any) -> Callable[[Any], bool]:
    if t is ast.Gt:
        def f(e: Any) -> bool:
            try:
                return af(e) > bv
            except TypeError:
                return False
    elif t is ast.GtE:
        def f(e: Any) -> bool:
            try:
                return af(e) >= bv
            except TypeError:
                return False
    elif t is ast.Lt:
        def f(e: Any) -> bool:
            try:
                return af(e) < bv
            except TypeError:
                return False
    else:
        def f(e: Any) -> bool:
            try:
                return af(e) <= bv
            except TypeError:
                return False
    return f
