"""Simulated time: one clock per simulation, injected into every model, backend and agent.

``SimClock`` runs ``factor`` times faster than the real monotonic clock (time compression)
from a chosen wall-clock start, so a 3-day scenario can run in seconds while the agent's
rules still see 3 days pass. ``ManualClock`` only moves when told (``advance``), for tests
and for replaying scenario files step by step. Both expose:

    now_ms()       simulated UTC wall time, ms
    mono_ms()      simulated monotonic time since the clock was made, ms
    monotonic()    the same in seconds (float), shaped like ``time.monotonic``
    time()         simulated wall time in seconds (float), shaped like ``time.time``
    await sleep(s) wait ``s`` simulated seconds
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable
from dataclasses import dataclass

# 2025-03-03 00:00:00 UTC, a Monday: scenario days start at a known weekday.
DEFAULT_START_MS = 1_740_960_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockConfig:
    start_wall_ms: int = DEFAULT_START_MS
    factor: float = 1.0  # simulated seconds per real second

    def __post_init__(self) -> None:
        if not (self.factor > 0 and self.factor <= 1_000_000):
            raise ValueError(f"clock factor must be in (0, 1e6], got {self.factor!r}")
        if self.start_wall_ms < 0:
            raise ValueError(f"start_wall_ms must be >= 0, got {self.start_wall_ms!r}")


class SimClock:
    """Compressed real time: every reading is ``start + factor * real elapsed``."""

    def __init__(self, config: ClockConfig = ClockConfig(), *,
                 real_monotonic: Callable[[], float] = _time.monotonic) -> None:
        self.config = config
        self._real = real_monotonic
        self._t0 = real_monotonic()
        self._held: int | None = None

    def hold_step(self) -> None:
        """Stand still until the event loop's current step ends.

        A device handles a remote command (stamp, sign, verify, publish its readings, ask the
        agent) in microseconds. Compressed ``factor`` times, the real microseconds of that
        work, and a GIL switch or a busy loop step in the middle, would become simulated
        seconds: a timestamp-skew rule would see a command "30 s old" that was never
        delayed. Backends call this when a command reaches the car; the synchronous part of
        its handling then takes no simulated time. Other tasks run in later steps as usual."""
        if self._held is None:
            self._held = self._mono_now()
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._held = None

    def _mono_now(self) -> int:
        return int((self._real() - self._t0) * self.config.factor * 1000)

    @property
    def factor(self) -> float:
        return self.config.factor

    def mono_ms(self) -> int:
        held = self._held
        return held if held is not None else self._mono_now()

    def now_ms(self) -> int:
        return self.config.start_wall_ms + self.mono_ms()

    def monotonic(self) -> float:
        return self.mono_ms() / 1000

    def time(self) -> float:
        return self.now_ms() / 1000

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.config.factor)

    async def sleep_until(self, wall_ms: int) -> None:
        await self.sleep((wall_ms - self.now_ms()) / 1000)


class ManualClock:
    """A clock that moves only when ``advance``/``set`` is called; ``sleep`` advances it."""

    def __init__(self, start_wall_ms: int = DEFAULT_START_MS) -> None:
        self._start = start_wall_ms
        self._mono = 0
        self.factor = float("inf")

    def mono_ms(self) -> int:
        return self._mono

    def now_ms(self) -> int:
        return self._start + self._mono

    def monotonic(self) -> float:
        return self._mono / 1000

    def time(self) -> float:
        return self.now_ms() / 1000

    def hold_step(self) -> None:
        """Nothing to do: this clock only moves when told."""

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"a clock does not go back: advance({ms})")
        self._mono += int(ms)

    def set_wall(self, wall_ms: int) -> None:
        """Move forward to ``wall_ms`` (no-op if already past it)."""
        self.advance(max(0, wall_ms - self.now_ms()))

    async def sleep(self, sim_seconds: float) -> None:
        self.advance(int(max(0.0, sim_seconds) * 1000))
        await asyncio.sleep(0)

    async def sleep_until(self, wall_ms: int) -> None:
        self.set_wall(wall_ms)
        await asyncio.sleep(0)


Clock = SimClock | ManualClock
