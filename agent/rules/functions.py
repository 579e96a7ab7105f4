"""Pure helper functions callable from rule expressions (no state, no clock, no I/O).

Each takes already-evaluated values and returns a value; bad input types give None or
False rather than an exception, so one odd command never makes a rule crash.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import ipaddress
import json
import math
import re
from collections import Counter
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import RuleEvalError

MAX_TEXT = 65_536


@lru_cache(maxsize=512)
def _glob_re(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def glob_matcher(patterns: str | tuple[str, ...] | list[str]) -> Callable[[Any], bool]:
    pats = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    if not all(isinstance(p, str) for p in pats):
        raise TypeError("glob patterns must be strings")
    rx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats)) if pats else None

    def match(s: Any) -> bool:
        if type(s) in (list, tuple):
            return any(match(x) for x in s[:64] if isinstance(x, str))
        return rx is not None and isinstance(s, str) and rx.match(s) is not None
    return match


def glob(s: Any, patterns: Any) -> bool:
    """True if ``s`` (or, for a list, any of its first 64 strings) matches any pattern."""
    if type(s) in (list, tuple):
        return any(glob(x, patterns) for x in s[:64] if isinstance(x, str))
    if not isinstance(s, str):
        return False
    if isinstance(patterns, str):
        patterns = (patterns,)
    if not isinstance(patterns, (list, tuple, frozenset)):
        return False
    return any(isinstance(p, str) and _glob_re(p).match(s) is not None for p in patterns)


@lru_cache(maxsize=256)
def _networks(nets: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in nets)


def networks(nets: Any) -> tuple[Any, ...]:
    if isinstance(nets, str):
        nets = (nets,)
    return _networks(tuple(nets))


def cidr(addr: Any, nets: Any) -> bool:
    if not isinstance(addr, str):
        return False
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
        return any(ip in n for n in networks(nets))
    except (ValueError, TypeError):
        return False


def cidr_const(nets: Any) -> Callable[[Any], bool]:
    parsed = networks(nets)

    def match(addr: Any) -> bool:
        if not isinstance(addr, str):
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in parsed)
    return match


def host(url: Any) -> str | None:
    if not isinstance(url, str) or len(url) > 4096:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def scheme(url: Any) -> str | None:
    if not isinstance(url, str) or len(url) > 4096:
        return None
    try:
        return urlsplit(url).scheme.lower() or None
    except ValueError:
        return None


def lower(s: Any) -> str | None:
    return s.lower() if isinstance(s, str) else None


def length(x: Any) -> int:
    return len(x) if isinstance(x, (str, list, tuple, dict, frozenset, bytes)) else 0


def size(x: Any) -> int:
    """Bytes of a value as UTF-8 (strings) or as compact JSON (anything else)."""
    if isinstance(x, bytes):
        return len(x)
    if isinstance(x, str):
        return len(x.encode("utf-8", "replace"))
    if x is None:
        return 0
    try:
        return len(json.dumps(x, separators=(",", ":"), default=str))
    except (TypeError, ValueError, RecursionError):
        return 0


def entropy(x: Any) -> float:
    """Shannon entropy in bits per byte of a string's UTF-8 bytes (or of bytes)."""
    if isinstance(x, str):
        data = x[:MAX_TEXT].encode("utf-8", "replace")
    elif isinstance(x, bytes):
        data = x[:MAX_TEXT]
    else:
        return 0.0
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def num(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str) and len(x) < 64:
        try:
            return float(x)
        except ValueError:
            return None
    return None


def text(x: Any) -> str:
    if isinstance(x, str):
        return x
    if x is None:
        return ""
    if isinstance(x, (bool, int, float)):
        return str(x)
    return ""


_VER_RE = re.compile(r"\d+")


def ver(x: Any) -> tuple[int, ...]:
    """Version string to a comparable tuple of its numbers: '1.2.10-rc1' -> (1, 2, 10, 1)."""
    if not isinstance(x, str):
        return ()
    return tuple(int(p[:9]) for p in _VER_RE.findall(x[:64]))


def ts(x: Any) -> int | None:
    """ISO-8601 time (OCPP style) to wall ms, or None."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return int(x)
    if not isinstance(x, str) or len(x) > 40:
        return None
    try:
        d = datetime.fromisoformat(x.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        return None
    return int(d.timestamp() * 1000)


def key(*parts: Any) -> str:
    return ".".join(text(p) for p in parts)


def _numbers(values: tuple[Any, ...]) -> list[float | int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RuleEvalError("min/max/abs need numbers")
        out.append(v)
    return out


def fmin(*values: Any) -> Any:
    return min(_numbers(values))


def fmax(*values: Any) -> Any:
    return max(_numbers(values))


def fabs(value: Any) -> Any:
    return abs(_numbers((value,))[0])


def basename(url: Any) -> str | None:
    if not isinstance(url, str) or len(url) > 4096:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return path.rsplit("/", 1)[-1] or None


_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----")


def fingerprint(pem: Any) -> str | None:
    """SHA-256 (hex) of the DER of the first certificate in a PEM string."""
    if not isinstance(pem, str) or len(pem) > MAX_TEXT:
        return None
    m = _PEM_RE.search(pem)
    if m is None:
        return None
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except (ValueError, binascii.Error):
        return None
    return hashlib.sha256(der).hexdigest()


def setting(args: Any, names: Any) -> Any:
    """The value an OCPP config write sets for one of ``names``: 1.6J ChangeConfiguration
    {key, value} or 2.0.1 SetVariables {set_variable_data: [{variable: {name}, attribute_value}]}."""
    if type(args) is not dict:
        return None
    if isinstance(names, str):
        names = (names,)
    k = args.get("key")
    if isinstance(k, str) and k in names:
        return args.get("value")
    items = args.get("set_variable_data")
    if type(items) is list:
        for item in items[:64]:
            var = item.get("variable") if type(item) is dict else None
            if type(var) is dict and var.get("name") in names:
                return item.get("attribute_value")
    return None


def profile_limit_a(args: Any, volts: float = 230.0) -> float | None:
    """Highest limit in a SetChargingProfile (1.6J or 2.0.1), in amps per phase (W converted)."""
    if type(args) is not dict:
        return None
    prof = args.get("cs_charging_profiles") or args.get("charging_profile")
    if type(prof) is not dict:
        return None
    schedules = prof.get("charging_schedule")
    if type(schedules) is dict:
        schedules = [schedules]
    if type(schedules) is not list:
        return None
    best = None
    for sch in schedules[:8]:
        if type(sch) is not dict or type(sch.get("charging_schedule_period")) is not list:
            continue
        watts = str(sch.get("charging_rate_unit", "A")).upper() == "W"
        for period in sch["charging_schedule_period"][:64]:
            lim = period.get("limit") if type(period) is dict else None
            if isinstance(lim, bool) or not isinstance(lim, (int, float)):
                continue
            if watts:
                phases = period.get("number_phases") or 3
                lim = lim / (volts * (phases if isinstance(phases, int) and 1 <= phases <= 3 else 3))
            best = lim if best is None else max(best, lim)
    return best


#: name -> (function, min args, max args)
PURE: dict[str, tuple[Callable[..., Any], int, int]] = {
    "glob": (glob, 2, 2),
    "cidr": (cidr, 2, 2),
    "host": (host, 1, 1),
    "scheme": (scheme, 1, 1),
    "lower": (lower, 1, 1),
    "len": (length, 1, 1),
    "size": (size, 1, 1),
    "entropy": (entropy, 1, 1),
    "num": (num, 1, 1),
    "text": (text, 1, 1),
    "ver": (ver, 1, 1),
    "ts": (ts, 1, 1),
    "key": (key, 1, 8),
    "basename": (basename, 1, 1),
    "fingerprint": (fingerprint, 1, 1),
    "setting": (setting, 2, 2),
    "profile_limit_a": (profile_limit_a, 1, 1),
    "min": (fmin, 2, 8),
    "max": (fmax, 2, 8),
    "abs": (fabs, 1, 1),
}
