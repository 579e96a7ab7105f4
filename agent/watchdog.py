"""The agent as a systemd ``Type=notify`` service: readiness, watchdog pings, stop and reload.

    service = Service(Notifier.from_env(), ledger, uplink, counters)
    service.ready()                      # READY=1 once the agent listens
    tg.create_task(service.run(stop))    # WATCHDOG=1 every WATCHDOG_USEC/2 while alive
    service.reloading() / service.ready()  # around a SIGHUP reload
    service.stopping()                   # STOPPING=1 at an orderly stop

A ping is sent only while each part the agent needs is alive, one probe each:
- the event loop: the pings come from a task on the loop, so a blocked loop sends none
  (a tick that came more than one interval late is counted, ``watchdog.loop_late``);
- the spool writer: checkpoints handed to it and none committed for longer than ``stall_s``
  (half the watchdog period: a hung fsync, a lock held on the spool, a disk that refuses
  every retry) withholds the ping, so systemd restarts the agent after WatchdogSec;
- the uplink: its network thread (paho's, started with ``loop_start``) has ended while the
  uplink runs. Being offline is not a fault: a charger may be offline for days.
A withheld ping is counted (``watchdog.withheld``) and logged with its reason once per spell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .sdnotify import Notifier

__all__ = ["Service", "WriterProbe", "uplink_probe"]

log = logging.getLogger("veritrail.watchdog")
Probe = Callable[[float], "str | None"]  # now (monotonic s) -> None when alive, else the reason


class WriterProbe:
    """The writer is stuck when sealed checkpoints wait for it and none is committed for
    ``stall_s``. Idle (nothing handed over) is alive, however long."""

    def __init__(self, ledger: Any, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger, self.stall_s, self.clock = ledger, stall_s, clock
        self.progress_at = clock()
        ledger.on_commit.append(self._committed)

    def _committed(self) -> None:
        self.progress_at = self.clock()

    def __call__(self, now: float) -> str | None:
        handed = self.ledger.backlog - self.ledger.sealer.pending  # sealed, not yet committed
        if handed <= 0:
            self.progress_at = now
            return None
        if now - self.progress_at > self.stall_s:
            return f"writer: {handed} records handed over, none committed for {now - self.progress_at:.1f} s"
        return None


def uplink_probe(uplink: Any) -> Probe:
    def probe(now: float) -> str | None:
        # paho keeps its network thread in Client._thread (None with a LoopNetwork, or before start)
        thread = getattr(getattr(uplink, "client", None), "_thread", None)
        if thread is not None and not thread.is_alive() and not getattr(uplink, "_stopping", False):
            return "uplink: the MQTT network thread has ended"
        return None
    return probe


class Service:
    def __init__(self, notifier: Notifier, ledger: Any, uplink: Any, counters: Counter[str], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier, self.ledger, self.counters, self.clock = notifier, ledger, counters, clock
        self.interval_s = notifier.watchdog_interval_s()
        self.probes: dict[str, Probe] = {}
        if self.interval_s is not None:
            self.probes["writer"] = WriterProbe(ledger, self.interval_s, clock)
            if uplink is not None:
                self.probes["uplink"] = uplink_probe(uplink)
        self._withheld_since: float | None = None

    def problems(self, now: float) -> list[str]:
        return [p for p in (probe(now) for probe in self.probes.values()) if p is not None]

    def ready(self) -> None:
        self.notifier.send(f"READY=1\nSTATUS={self._status()}")

    def reloading(self) -> None:
        self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1")

    def _status(self) -> str:
        st = self.ledger.status()
        return f"seq {st['seq']}, durable {st['durable_seq']}, boot {st['boot']}"

    def tick(self) -> bool:
        """One watchdog tick: ping if every probe says alive; True if it pinged."""
        now = self.clock()
        problems = self.problems(now)
        if problems:
            self.counters["watchdog.withheld"] += 1
            if self._withheld_since is None:
                self._withheld_since = now
                log.error("watchdog ping withheld: %s", "; ".join(problems))
            return False
        if self._withheld_since is not None:
            log.warning("watchdog pings resume after %.1f s", now - self._withheld_since)
            self._withheld_since = None
        self.counters["watchdog.pings"] += 1
        return self.notifier.send(f"WATCHDOG=1\nSTATUS={self._status()}")

    async def run(self, stop: asyncio.Event) -> None:
        """Ping until ``stop``; returns at once when systemd asked for no watchdog."""
        if self.interval_s is None:
            return
        interval = self.interval_s
        self.tick()
        while not stop.is_set():
            due = self.clock() + interval
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
            if self.clock() - due > interval:
                self.counters["watchdog.loop_late"] += 1
            self.tick()
