"""Engine behaviour: verdict gating, staleness, safety paths, persistence across restarts."""
from __future__ import annotations

import pytest

from agent.rules import Engine, RuleSet, load_engine, load_pack_text

from .conftest import T0

UNLOCK = {"cmd": "ocpp.UnlockConnector", "args": {"connector_id": 1}, "src": {"id": "csms"}, "sub": "1"}


def _pack(rules: str, device_class: str = "charger") -> RuleSet:
    return RuleSet.build([load_pack_text(f'[pack]\nname = "t"\ndevice_class = ["{device_class}"]\n{rules}')],
                         device_class, 0)


def test_block_only_in_enforce_mode(charger):
    monitor = load_engine(device_class="charger", mode="monitor")
    for engine, verdict in ((charger, "block"), (monitor, "alert")):
        engine.update_twin({"tx.active": True, "connector.1.cp_state": "C", "connector.1.current_a": 32.0}, T0)
        j = engine.judge(UNLOCK, T0 + 500)
        assert (j.verdict, j.rule_ids) == (verdict, ("CP-01",))
        assert j.alerts[0].rule_id == "CP-01" and j.alerts[0].severity == "high"
        assert j.bundle_version == 0
    assert charger.judge(UNLOCK, T0 + 600).refusal == "OngoingAuthorizedTransaction"


def test_stale_safety_value_counts_as_unsafe(charger):
    charger.update_twin({"tx.active": False, "connector.1.cp_state": "B", "connector.1.current_a": 0.0}, T0)
    assert charger.judge(UNLOCK, T0 + 1_000).verdict == "allow"
    j = charger.judge(UNLOCK, T0 + 3_000)  # current reading is 3 s old: treat as flowing
    assert j.verdict == "block"


def test_never_reported_safety_value_counts_as_unsafe(tcu):
    j = tcu.judge({"cmd": "tcu.door_unlock", "src": {"id": "owner-app", "role": "owner"}}, T0)
    assert j.verdict == "block" and "TCU-01" in j.rule_ids


def test_not_enforce_safe_rule_only_alerts():
    rs = _pack('[[rule]]\nid = "X-1"\ntitle = "t"\non = ["ocpp.Reset"]\nwhen = "True"\naction = "block"\nrefs = ["r"]\n')
    j = Engine(rs, device_class="charger", mode="enforce").judge({"cmd": "ocpp.Reset"}, T0)
    assert j.verdict == "alert" and j.rule_ids == ("X-1",)


def test_safety_paths_are_never_refused():
    rs = _pack('[[rule]]\nid = "X-1"\ntitle = "t"\non = ["tcu.*"]\nwhen = "True"\naction = "block"\n'
               'enforce_safe = true\nrefs = ["r"]\n', "tcu")
    engine = Engine(rs, device_class="tcu", mode="enforce")
    assert engine.judge({"cmd": "tcu.door_lock"}, T0).verdict == "block"
    for cmd in ("tcu.ecall", "tcu.emergency_unlock", "tcu.immobilise_cancel"):
        assert engine.judge({"cmd": cmd}, T0).verdict == "alert"


def test_observed_events_are_never_blocked(charger):
    j = charger.observe({"cmd": "ocpp.UnlockConnector", "args": {"connector_id": 1}}, T0)
    assert j.verdict == "alert" and "CP-01" in j.rule_ids


def test_strongest_action_wins_and_why_names_it(charger):
    charger.update_twin({"tx.active": True, "firmware.version": "1.0"}, T0)
    j = charger.judge({"cmd": "ocpp.UpdateFirmware", "args": {"location": "http://evil.example/fw-0.1.bin"}}, T0)
    assert set(j.rule_ids) == {"CP-06", "CP-06.tx"} and j.verdict == "block"
    assert "unsigned" in j.why


def test_malformed_command_is_counted_and_alerted(charger):
    for bad in ({}, {"cmd": 5}, {"cmd": "x" * 500}, "not a map"):
        j = charger.judge(bad, T0)  # type: ignore[arg-type]
        assert j.verdict == "alert" and j.rule_ids == ("VT-MALFORMED",)
    assert charger.counters["judge_malformed"] == 4


def test_restart_mid_window_keeps_the_window(tmp_path):
    state = tmp_path / "rules.state"
    reset = {"cmd": "ocpp.Reset", "args": {"type": "OnIdle"}, "src": {"id": "csms"}}
    engine = load_engine(device_class="charger", mode="enforce", state_path=state)
    engine.update_twin({"tx.active": False}, T0)
    assert engine.judge(reset, T0 + 60_000).verdict == "allow"
    assert engine.judge(reset, T0 + 120_000).verdict == "allow"
    engine.close()
    again = load_engine(device_class="charger", mode="enforce", state_path=state)
    j = again.judge(reset, T0 + 180_000)   # third reset within the hour: reboot loop
    assert j.verdict == "defer" and "CP-03" in j.rule_ids
    fresh = load_engine(device_class="charger", mode="enforce")   # control: without the state it would pass
    fresh.update_twin({"tx.active": False}, T0)
    assert fresh.judge(reset, T0 + 180_000).verdict == "allow"


def test_autosave_without_explicit_save(tmp_path):
    state = tmp_path / "rules.state"
    engine = load_engine(device_class="charger", state_path=state, autosave_every=3)
    for i in range(3):
        engine.judge({"cmd": "ocpp.TriggerMessage", "args": {"requested_message": "MeterValues"}}, T0 + i)
    assert state.exists()
    restarted = load_engine(device_class="charger", state_path=state)
    assert any(restarted.memory.windows.values())


def test_background_autosave_writes_off_the_judging_thread_and_counts_failures(tmp_path, monkeypatch):
    import threading
    from agent.rules import state as files
    writers: list[str] = []
    real = files.write_atomic

    def spy(path, data, mode=0o600):
        writers.append(threading.current_thread().name)
        real(path, data, mode)

    monkeypatch.setattr(files, "write_atomic", spy)
    state = tmp_path / "rules.state"
    engine = load_engine(device_class="charger", state_path=state, autosave_every=3, autosave_min_ms=0,
                         background_save=True)
    for i in range(3):
        engine.judge({"cmd": "ocpp.TriggerMessage", "args": {"requested_message": "MeterValues"}}, T0 + i)
    assert engine._writer is not None and engine._writer.flush(10)
    assert writers == ["vt-rules-state"] and state.exists()  # written by the writer thread, not by judge()
    assert any(load_engine(device_class="charger", state_path=state).memory.windows.values())
    engine.save_state()  # an explicit save (at stop) is synchronous, after the background one
    assert writers[-1] == threading.current_thread().name

    def broken(path, data, mode=0o600):
        raise PermissionError("read-only flash")

    monkeypatch.setattr(files, "write_atomic", broken)
    for i in range(3):
        engine.judge({"cmd": "ocpp.TriggerMessage", "args": {"requested_message": "MeterValues"}}, T0 + 10 + i)
    assert engine._writer.flush(10)
    assert engine.status()["counters"]["state_save_failed:cannot write state: PermissionError"] == 1


def test_autosave_is_rate_limited_under_a_storm_of_commands(tmp_path, monkeypatch):
    from agent.rules import state as files
    saves: list[int] = []
    monkeypatch.setattr(files, "save_state", lambda path, data: saves.append(1))
    engine = load_engine(device_class="charger", state_path=tmp_path / "rules.state", autosave_every=3)
    for i in range(3000):  # 3,000 commands in 1.5 s: every 3rd would save without the limit
        engine.judge({"cmd": "ocpp.TriggerMessage", "args": {"requested_message": "MeterValues"}}, T0 + i // 2)
    assert len(saves) == 2  # the first, then one second later


def test_corrupt_state_is_counted_and_engine_starts_empty(tmp_path):
    state = tmp_path / "rules.state"
    state.write_bytes(b"\xc1 not msgpack")
    engine = load_engine(device_class="charger", state_path=state)
    assert any(k.startswith("state_unreadable") for k in engine.counters)
    assert engine.judge({"cmd": "ocpp.Reset", "args": {"type": "OnIdle"}}, T0).bundle_version == 0


def test_twin_update_rule_alerts_with_cooldown(tcu):
    tcu.update_twin({"vehicle.speed": 0.0, "vehicle.gear": "P", "vehicle.key_present": False}, T0)
    tcu.judge({"cmd": "tcu.door_unlock", "src": {"id": "p", "role": "owner"}}, T0 + 100)
    alerts = [tcu.update_twin({"vehicle.speed": 30.0, "vehicle.key_present": False}, T0 + 60_000 + i * 1000)
              for i in range(5)]
    assert [len([a for a in al if a.rule_id == "TCU-10"]) for al in alerts] == [1, 0, 0, 0, 0]


def test_twin_drops_bad_updates_with_reasons(charger):
    charger.update_twin({"bad key!": 1, "ok.key": object(), "tx.active": False}, T0)
    assert charger.twin.dropped == {"bad_key": 1, "bad_value": 1}
    assert charger.twin.raw("tx.active") is False


def test_judging_reads_no_clock(monkeypatch, charger):
    import time
    def boom(*a):
        raise AssertionError("the engine read the clock")
    for name in ("time", "monotonic", "time_ns", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, boom)
    charger.update_twin({"tx.active": False}, T0)
    charger.judge(UNLOCK, T0)


@pytest.mark.parametrize("mode", ["shadow", "", None])
def test_bad_mode_refused(mode):
    with pytest.raises(ValueError):
        load_engine(device_class="charger", mode=mode)
