"""Replay one catalogue scenario (agent/rules/scenarios/*.toml, the rules' own files) through
the real shim into a real agent, on a manual clock set to each step's time.

Per step: twin updates go through ``Shim.update``, remote commands through ``Shim.check``
(the round trip is timed: ``latency_us``), local events (``event = true``) through
``Shim.record`` as the firmware would report them. What fired is read back from the
agent's own records: the ``cmd`` records' rule ids and the ``alert`` records.

The shim hands frames to its socket and returns; the agent reads them on its own thread.
Before the manual clock moves to the next step, the replay waits (bounded) until the agent
has applied the step's twin update / recorded its event, otherwise a reading taken at 0 s
could be stamped at the 25 min the clock already shows (``barrier_timeouts`` counts waits
that ran out).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.rules.scenario import Scenario, load_scenario

from .agent_host import HostConfig
from .clock import ManualClock
from .wiring import ShimLink, ThreadedAgent

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "agent" / "rules" / "scenarios"


@dataclass
class ScenarioRun:
    scenario: Scenario
    fired: list[str] = field(default_factory=list)
    latencies_us: list[float] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)     # what we sent: cmd, update, event
    fallbacks: int = 0
    barrier_timeouts: int = 0

    @property
    def id(self) -> str:
        return Path(self.scenario.source).stem

    @property
    def verdict(self) -> str:
        if self.scenario.kind == "attack":
            return "detected" if self.scenario.rule in self.fired else "missed"
        return "clean" if not self.fired else "alert"

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_us)
        return {"id": self.id, "rule": self.scenario.rule, "kind": self.scenario.kind,
                "device_class": self.scenario.device_class, "title": self.scenario.title,
                "expected_rules": [self.scenario.rule] if self.scenario.kind == "attack" else [],
                "fired_rules": self.fired, "verdict": self.verdict,
                "latency_us": round(statistics.median(lat), 1) if lat else None,
                "latency_p99_us": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
                "commands": self.sent.get("cmd", 0), "events": self.sent.get("event", 0),
                "updates": self.sent.get("update", 0), "shim_fallbacks": self.fallbacks,
                "barrier_timeouts": self.barrier_timeouts}


def scenario_paths(directory: Path = SCENARIO_DIR) -> list[Path]:
    return sorted(directory.glob("*.toml"))


def fired_rules(records: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in records:
        ids = r.get("r") if r.get("kind") == "cmd" else (
            [r["x"]["rule"]] if r.get("kind") == "alert" and isinstance(r.get("x"), dict) and "rule" in r["x"] else [])
        for rid in ids or ():
            if rid not in out:
                out.append(rid)
    return sorted(out)


def _agent_until(agent: ThreadedAgent, predicate: Any, timeout_s: float = 5.0) -> bool:
    """Poll ``predicate()`` on the agent's own loop until true or the deadline passes."""
    async def probe() -> bool:
        return bool(predicate())
    deadline = time.monotonic() + timeout_s
    while not agent.call(probe):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return True


def _twin_has(agent: ThreadedAgent, keys: list[str], wall_ms: int) -> bool:
    snap = agent.host.engine.twin.snapshot()
    return all(k in snap and snap[k][1] >= wall_ms for k in keys)


def _async_value(fn: Any, *args: Any) -> Any:
    async def call() -> Any:
        return fn(*args)
    return call


def _next_seq(agent: ThreadedAgent) -> int:
    assert agent.host.ledger is not None
    return agent.host.ledger.sealer.next_seq


def run_scenario(path: Path | str, workdir: Path | str | None = None, *, mode: str = "monitor") -> ScenarioRun:
    sc = load_scenario(path)
    with tempfile.TemporaryDirectory(prefix="vt-replay-", dir=workdir) as tmp:
        clock = ManualClock(sc.start_ms)
        dev = f"sim-{Path(path).stem.replace('.', '-')}"
        agent = ThreadedAgent(Path(tmp) / "agent", HostConfig(
            device_id=dev, device_class=sc.device_class, mode=mode), clock).start()
        link = ShimLink.connect(agent.socket_path, check_deadline_ms=5000)
        run = ScenarioRun(sc)
        try:
            for step in sc.steps:
                clock.set_wall(sc.start_ms + step.at_ms)
                if step.update is not None:
                    link.update(**step.update)
                    run.sent["update"] = run.sent.get("update", 0) + 1
                    link.flush()
                    wall, keys = clock.now_ms(), list(step.update)
                    if not _agent_until(agent, lambda: _twin_has(agent, keys, wall)):
                        run.barrier_timeouts += 1
                if step.cmd is None:
                    continue
                c = step.cmd
                if step.event:
                    before = agent.call(_async_value(_next_seq, agent))
                    link.record(c["cmd"], src=c.get("src") or None, sub=c.get("sub"), args=c.get("args") or {})
                    run.sent["event"] = run.sent.get("event", 0) + 1
                    link.flush()
                    if not _agent_until(agent, lambda: _next_seq(agent) > before):
                        run.barrier_timeouts += 1
                    continue
                t0 = time.perf_counter()
                v = link.check(c["cmd"], c.get("args") or {}, c.get("src") or {}, c.get("sub"))
                run.latencies_us.append((time.perf_counter() - t0) * 1e6)
                run.sent["cmd"] = run.sent.get("cmd", 0) + 1
                if v.source != "agent":
                    run.fallbacks += 1
            link.flush()
            agent.drained()
        finally:
            link.close()
            agent.stop()
        run.records = agent.final_records
        run.fired = fired_rules(run.records)
        return run
