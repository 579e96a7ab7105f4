"""Every shipped rule: its catalogue attack scenario fires it, its benign scenario does not."""
from __future__ import annotations

import re

import pytest

from agent.rules import load_engine, load_pack_file
from agent.rules.scenario import load_scenario, replay

from .conftest import PACKS, SCENARIOS

PACK_FILES = sorted(PACKS.glob("*.toml"))
SHIPPED = {r.id: r for p in PACK_FILES for r in load_pack_file(p).rules}
CASES = [(rid, kind) for rid in sorted(SHIPPED) for kind in ("attack", "benign")]


def test_at_least_30_catalogue_rules_shipped_each_with_refs():
    catalogue_ids = {re.match(r"^(CP|TCU|GEN)-\d\d", rid).group(0) for rid in SHIPPED}
    assert len(catalogue_ids) >= 30, sorted(catalogue_ids)
    for rule in SHIPPED.values():
        assert rule.refs and any("RULES_CATALOG" in ref for ref in rule.refs), rule.id


def test_every_scenario_file_belongs_to_a_shipped_rule():
    for path in SCENARIOS.glob("*.toml"):
        sc = load_scenario(path)
        assert sc.rule in SHIPPED, path.name
        assert path.name == f"{sc.rule}.{sc.kind}.toml"


@pytest.mark.parametrize(("rule_id", "kind"), CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_rule_against_its_scenario(rule_id, kind):
    path = SCENARIOS / f"{rule_id}.{kind}.toml"
    assert path.exists(), f"missing scenario {path.name}"
    sc = load_scenario(path)
    engine = load_engine(device_class=sc.device_class, mode="enforce")
    assert rule_id in {r.id for r in engine.rules}, "rule not loaded for the scenario's device class"
    out = replay(sc, engine)
    if kind == "attack":
        assert rule_id in out.fired, f"{rule_id} did not fire; fired: {out.fired}"
    else:
        assert rule_id not in out.fired, f"{rule_id} fired on benign traffic: {out.lines}"
    assert not out.expect_failures, out.expect_failures
    assert not [k for k in engine.counters if k.startswith("eval_error")], dict(engine.counters)


@pytest.mark.parametrize("rule_id", sorted(r for r, rule in SHIPPED.items() if rule.action != "alert"))
def test_monitor_mode_never_blocks(rule_id):
    sc = load_scenario(SCENARIOS / f"{rule_id}.attack.toml")
    engine = load_engine(device_class=sc.device_class, mode="monitor")
    alerted = False
    for step in sc.steps:
        now = sc.start_ms + step.at_ms
        if step.update:
            engine.update_twin(step.update, now)
        if step.cmd:
            j = engine.observe(step.cmd, now) if step.event else engine.judge(step.cmd, now)
            assert j.verdict in ("allow", "alert")
            alerted = alerted or (rule_id in j.rule_ids and j.verdict == "alert")
    assert alerted, f"{rule_id} should still alert in monitor mode"


def test_only_catalogue_enforce_safe_rules_may_block():
    # RULES_CATALOG §6: alert-only rules
    alert_only = {"CP-02", "CP-11", "CP-16", "CP-17", "CP-19", "CP-21", "TCU-05", "TCU-08", "TCU-10",
                  "TCU-13", "GEN-01", "GEN-02", "GEN-03"}
    for rid, rule in SHIPPED.items():
        if rid in alert_only:
            assert rule.action == "alert" and not rule.enforce_safe, rid
