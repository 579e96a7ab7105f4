"""Api records the rules watch (security events, PIN failures...) are shown to the engine
with ``observe``; records of commands already judged through ``chk`` are not."""

from __future__ import annotations

import time
from typing import Any

from agent.core.record import decode
from agent.rules import load_engine
from agent.testing import AgentHarness, AllowAllJudge, FakeAlert, FakeJudgement


class ObservingJudge(AllowAllJudge):
    """AllowAllJudge that watches security events and alerts on tamper."""

    def __init__(self) -> None:
        super().__init__()
        self.observed: list[dict[str, Any]] = []

    def watches(self, name: str) -> bool:
        return name == "ocpp.SecurityEventNotification"

    def observe(self, op, now_ms: int) -> FakeJudgement:
        self.observed.append(dict(op))
        alerts = [FakeAlert("CP-16", "high", "tamper")] if op["args"].get("type") == "TamperDetectionActivated" else []
        return FakeJudgement("alert" if alerts else "allow", tuple(a.rule_id for a in alerts), 0, alerts, None)


def _records(h: AgentHarness) -> list[dict]:
    from agent.spool import Spool
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        return [decode(d) for b in spool.iter_blocks() for d in b.records]
    finally:
        spool.close()


def test_watched_events_are_observed_and_alert_judged_commands_are_not(tmp_path):
    judge = ObservingJudge()
    h = AgentHarness(tmp_path / "a", engine=judge, ledger__checkpoint_interval_ms=50).start()
    try:
        c = h.client()
        c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "st": "ok", "x": {"args": {"v": 1}}}})
        c.send({"t": "rec", "r": {"api": "ocpp.SecurityEventNotification", "src": {"id": "self"},
                                  "x": {"dir": "out", "args": {"type": "TamperDetectionActivated"}}}})
        # the guard's record of a command that went through chk carries its verdict: not re-judged
        c.send({"t": "rec", "r": {"api": "ocpp.SecurityEventNotification",
                                  "x": {"v": "allow", "args": {"type": "TamperDetectionActivated"}}}})
        ok = c.call({"t": "rec", "id": 1, "sync": True, "r": {"api": "end"}})
        assert ok["t"] == "ok"
        end = time.monotonic() + 10
        while not any(r.get("kind") == "alert" for r in _records(h)):
            assert time.monotonic() < end, "no alert record"
            time.sleep(0.02)
    finally:
        h.stop()
    assert judge.observed == [{"cmd": "ocpp.SecurityEventNotification", "args": {"type": "TamperDetectionActivated"},
                               "src": {"id": "self"}, "sub": None}]
    recs = _records(h)
    alerts = [r for r in recs if r.get("kind") == "alert"]
    assert len(alerts) == 1 and alerts[0]["x"]["rule"] == "CP-16" and alerts[0]["api"] == "ocpp.SecurityEventNotification"
    event_seq = next(r["seq"] for r in recs if r.get("api") == "ocpp.SecurityEventNotification")
    assert alerts[0]["seq"] > event_seq  # the alert follows the record it is about


def test_real_engine_watches_events_but_not_routine_or_command_only_traffic():
    engine = load_engine(device_class="charger", mode="monitor")
    assert engine.watches("ocpp.SecurityEventNotification")
    assert not engine.watches("ocpp.MeterValues")  # only CP-18 (scope = commands) is on ocpp.*
    tcu = load_engine(device_class="tcu", mode="monitor")
    assert tcu.watches("tcu.event.pin_failed")
    assert not tcu.watches("tcu.vehicle_state")
