"""Rule memory: count windows, decayed counters, first-seen sets with TTL, last-seen
times for sequences (A then B within T), and hour-of-week baselines.

Every store is keyed by a *site* (``"<rule id>|<helper call as written>"``) and then by a
key value, so editing one rule never disturbs another's state. Everything is bounded:
``MAX_KEYS_PER_SITE`` keys per site (least recently used evicted first) and
``MAX_EVENTS_PER_KEY`` timestamps per window key (oldest dropped first, so a count then
saturates rather than growing without bound); every eviction is counted in ``dropped``.
Pure: times are passed in, state goes out as plain lists/dicts (``to_state``/``from_state``).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

from .errors import StateError

MAX_KEYS_PER_SITE = 4096
MAX_EVENTS_PER_KEY = 4096
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0

STATE_FORMAT = 1


def hour_of_week(now_ms: int, utc_offset_min: int = 0) -> int:
    local = now_ms + utc_offset_min * 60_000
    days = local // DAY_MS
    return ((days + _EPOCH_WEEKDAY) % 7) * 24 + (local % DAY_MS) // HOUR_MS


class Memory:
    __slots__ = ("windows", "decays", "seen", "firsts", "last", "baselines", "fired", "dropped")

    def __init__(self) -> None:
        self.windows: dict[str, dict[str, deque[int]]] = {}
        self.decays: dict[str, dict[str, list[float]]] = {}
        self.seen: dict[str, dict[str, int]] = {}
        self.firsts: dict[str, dict[str, int]] = {}
        self.last: dict[str, dict[str, int]] = {}
        self.baselines: dict[str, dict[str, list[Any]]] = {}
        self.fired: dict[str, int] = {}
        self.dropped: Counter[str] = Counter()

    # -- helpers -------------------------------------------------------------------
    def _site(self, table: dict[str, dict[str, Any]], site: str) -> dict[str, Any]:
        d = table.get(site)
        if d is None:
            d = table[site] = {}
        return d

    def _evict(self, d: dict[str, Any], what: str) -> None:
        if len(d) >= MAX_KEYS_PER_SITE:
            del d[next(iter(d))]
            self.dropped[f"{what}_key_evicted"] += 1

    # -- count windows -------------------------------------------------------------
    def count(self, site: str, key: str, now: int, within_ms: int) -> int:
        """Record one event at ``now`` under ``key``; return the events in (now - within, now]."""
        d = self._site(self.windows, site)
        q = d.get(key)
        if q is None:
            self._evict(d, "window")
            q = d[key] = deque()
        elif len(d) > 1:
            d[key] = d.pop(key)  # most recently used last
        q.append(now)
        horizon = now - within_ms
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) > MAX_EVENTS_PER_KEY:
            q.popleft()
            self.dropped["window_event_dropped"] += 1
        return len(q)

    # -- decayed counters ----------------------------------------------------------
    def decayed(self, site: str, key: str, now: int, half_life_ms: int, inc: float) -> float:
        d = self._site(self.decays, site)
        entry = d.get(key)
        if entry is None:
            self._evict(d, "decay")
            d[key] = entry = [0.0, now]
        elif len(d) > 1:
            d[key] = d.pop(key)
        dt = now - entry[1]
        value = entry[0] * math.exp2(-dt / half_life_ms) if dt > 0 else entry[0]
        value += inc
        entry[0] = value
        if now > entry[1]:
            entry[1] = now
        return value

    # -- first-seen sets -----------------------------------------------------------
    def first_seen(self, site: str, value: str, now: int, ttl_ms: int) -> bool:
        """True when ``value`` was not seen within ``ttl_ms``; remembers it either way."""
        d = self._site(self.seen, site)
        last = d.pop(value, None)
        if last is None:
            self._evict(d, "seen")
        d[value] = now
        return last is None or now - last > ttl_ms

    def known_for(self, site: str, value: str, now: int) -> int:
        """Milliseconds since ``value`` was first seen (0 the first time)."""
        d = self._site(self.firsts, site)
        first = d.get(value)
        if first is None:
            self._evict(d, "firsts")
            d[value] = first = now
        return max(0, now - first)

    # -- sequences -----------------------------------------------------------------
    def note(self, site: str, key: str, now: int) -> None:
        d = self._site(self.last, site)
        if d.pop(key, None) is None:
            self._evict(d, "last")
        d[key] = now

    def since(self, site: str, key: str, now: int) -> float:
        d = self.last.get(site)
        if d is None:
            return math.inf
        t = d.get(key)
        return math.inf if t is None else max(0, now - t)

    # -- hour-of-week baselines ----------------------------------------------------
    # entry: [first_ms, total, frozen_until, cur_hour, cur_count, bins(168), mean(168), var(168), n(168)]
    def unusual(self, site: str, key: str, now: int, *, utc_offset_min: int, warmup_ms: int,
                min_count: int, floor: float, hold_ms: int, min_mass: float) -> bool:
        d = self._site(self.baselines, site)
        b = d.get(key)
        if b is None:
            self._evict(d, "baseline")
            b = d[key] = [now, 0, 0, now // HOUR_MS, 0, [0.0] * 168, [0.0] * 168, [0.0] * 168, [0] * 168]
        elif len(d) > 1:
            d[key] = d.pop(key)
        how = hour_of_week(now, utc_offset_min)
        hour = now // HOUR_MS
        bins, mean, var, n = b[5], b[6], b[7], b[8]
        if hour != b[3]:
            # fold the finished hour's count into its hour-of-week rate baseline (EWMA)
            if b[4] > 0 and now >= b[2]:
                prev = hour_of_week(b[3] * HOUR_MS, utc_offset_min)
                _ewma(mean, var, n, prev, float(b[4]))
            b[3], b[4] = hour, 0
        cur = b[4] + 1
        warm = now - b[0] >= warmup_ms and b[1] >= min_count
        flagged = False
        if warm:
            rare_bin = bins[how] / b[1] < min_mass
            high_rate = n[how] >= 3 and cur > max(floor, mean[how] + 4.0 * math.sqrt(var[how]))
            flagged = rare_bin or high_rate
        if flagged:
            b[2] = now + hold_ms          # learning frozen while the alert is open
        if now >= b[2]:
            bins[how] += 1.0
            b[1] += 1
            b[4] = cur
            if b[1] > 100_000:  # keep the numbers small; proportions are what count
                for i in range(168):
                    bins[i] /= 2
                b[1] //= 2
        return flagged

    # -- cooldowns (alert de-duplication) ------------------------------------------
    def cooled(self, key: str, now: int, cooldown_ms: int) -> bool:
        last = self.fired.get(key)
        return last is None or now - last >= cooldown_ms

    def mark_fired(self, key: str, now: int) -> None:
        if key not in self.fired and len(self.fired) >= MAX_KEYS_PER_SITE:
            del self.fired[next(iter(self.fired))]
            self.dropped["cooldown_key_evicted"] += 1
        self.fired[key] = now

    # -- persistence ---------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "windows": {s: {k: list(q) for k, q in d.items()} for s, d in self.windows.items()},
            "decays": self.decays, "seen": self.seen, "firsts": self.firsts, "last": self.last,
            "baselines": self.baselines, "fired": self.fired,
        }

    @classmethod
    def from_state(cls, state: Any) -> "Memory":
        m = cls()
        if not isinstance(state, dict):
            raise StateError("memory state is not a map")
        try:
            for s, d in _table(state, "windows").items():
                m.windows[s] = {k: deque(int(t) for t in q) for k, q in d.items()}
            for s, d in _table(state, "decays").items():
                m.decays[s] = {k: [float(v[0]), int(v[1])] for k, v in d.items()}
            for name in ("seen", "firsts", "last"):
                getattr(m, name).update({s: {k: int(t) for k, t in d.items()} for s, d in _table(state, name).items()})
            for s, d in _table(state, "baselines").items():
                m.baselines[s] = {k: _check_baseline(v) for k, v in d.items()}
            fired = state.get("fired", {})
            if not isinstance(fired, dict):
                raise StateError("fired is not a map")
            m.fired = {str(k): int(v) for k, v in fired.items()}
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise StateError(f"memory state malformed: {type(exc).__name__}") from None
        return m


def _ewma(mean: list[float], var: list[float], n: list[int], i: int, x: float, alpha: float = 0.2) -> None:
    if n[i] == 0:
        mean[i], var[i] = x, 0.0
    else:
        diff = x - mean[i]
        incr = alpha * diff
        mean[i] += incr
        var[i] = (1 - alpha) * (var[i] + diff * incr)
    n[i] += 1


def _table(state: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    t = state.get(name, {})
    if not isinstance(t, dict) or not all(isinstance(d, dict) for d in t.values()):
        raise StateError(f"{name} is not a map of maps")
    return t


def _check_baseline(v: Any) -> list[Any]:
    if not (isinstance(v, list) and len(v) == 9 and all(isinstance(v[i], list) and len(v[i]) == 168 for i in (5, 6, 7, 8))):
        raise StateError("baseline entry malformed")
    return [int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]),
            [float(x) for x in v[5]], [float(x) for x in v[6]], [float(x) for x in v[7]], [int(x) for x in v[8]]]
