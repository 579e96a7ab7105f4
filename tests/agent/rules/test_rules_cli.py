"""`veritrail rules check|test|keygen|bundle|inspect`."""
from __future__ import annotations

import json
import stat

from agent.cli import main as veritrail
from agent.rules import load_engine
from agent.rules.cli import read_public_key

from .conftest import PACKS, SCENARIOS, T0


def test_check_accepts_default_packs(capsys):
    assert veritrail(["rules", "check", *map(str, sorted(PACKS.glob("*.toml")))]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == 3 and "22 rules" in out


def test_check_rejects_bad_pack_with_rule_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pack]\nname = "b"\n[[rule]]\nid = "B-1"\ntitle = "t"\non = ["x"]\nrefs = ["r"]\n'
                   'when = "mystery(cmd)"\n')
    assert veritrail(["rules", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.toml:8" in out and "B-1" in out and "unknown function 'mystery'" in out


def test_test_prints_fired_rules_and_passes(capsys):
    rc = veritrail(["rules", "test", str(PACKS / "ocpp_charger.toml"), str(SCENARIOS / "CP-12.attack.toml")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ocpp.TriggerMessage" in out and "block" in out and "fired: CP-12 x" in out and "PASS" in out


def test_test_fails_when_the_rule_is_missing(tmp_path, capsys):
    # the general pack has no CP-01: the attack scenario must report FAIL
    rc = veritrail(["rules", "test", str(PACKS / "general.toml"), str(SCENARIOS / "CP-01.attack.toml")])
    assert rc == 1 and "FAIL" in capsys.readouterr().out


def test_keygen_bundle_inspect_install(tmp_path, capsys):
    key = tmp_path / "fleet.key"
    assert veritrail(["rules", "keygen", "-o", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "private" not in json.loads((tmp_path / "fleet.key.pub").read_text())
    out = tmp_path / "b.cose"
    assert veritrail(["rules", "bundle", *map(str, sorted(PACKS.glob("*.toml"))), "--key", str(key),
                      "--version", "4", "-o", str(out)]) == 0
    assert veritrail(["rules", "inspect", str(out), "--pub", str(tmp_path / "fleet.key.pub")]) == 0
    assert "signature verified" in capsys.readouterr().out
    engine = load_engine(device_class="tcu")
    assert engine.install_bundle(out.read_bytes(), read_public_key(tmp_path / "fleet.key.pub")) == 4
    assert engine.judge({"cmd": "tcu.locate"}, T0).bundle_version == 4


def test_bundle_refuses_to_sign_a_bad_pack(tmp_path, capsys):
    key = tmp_path / "fleet.key"
    veritrail(["rules", "keygen", "-o", str(key)])
    bad = tmp_path / "bad.toml"
    bad.write_text('[pack]\nname = "b"\n[[rule]]\nid = "B-1"\ntitle = "t"\non = ["x"]\nrefs = ["r"]\nwhen = "2 ** 99999"\n')
    assert veritrail(["rules", "bundle", str(bad), "--key", str(key), "--version", "1", "-o", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()
