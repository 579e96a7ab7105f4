"""Signed rule bundles: installed atomically; tampered, replayed, downgraded, foreign-key or
bad-rule bundles are refused with a reason and the old bundle stays in force."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from agent.core.keys import Ed25519Signer, P256Signer
from agent.rules import BundleRejected, load_engine
from agent.rules.bundle import build_bundle

from .conftest import PACKS, T0

RESET = {"cmd": "ocpp.Reset", "args": {"type": "OnIdle"}, "src": {"id": "csms"}}
STRICT_RESET = '''[pack]
name = "strict"
device_class = ["charger"]
[[rule]]
id = "LOCAL-1"
title = "no resets at all"
on = ["ocpp.Reset"]
when = "True"
action = "block"
enforce_safe = true
refs = ["test"]
'''


def _texts(extra: dict[str, str] | None = None) -> dict[str, str]:
    texts = {p.name: p.read_text() for p in PACKS.glob("*.toml")}
    texts.update(extra or {})
    return texts


@pytest.fixture
def fleet():
    return Ed25519Signer.generate()


@pytest.fixture
def device(tmp_path):
    return load_engine(device_class="charger", mode="enforce", state_path=tmp_path / "state",
                       bundle_dir=tmp_path / "bundle")


def _install_v2(device, fleet):
    message = build_bundle(_texts({"strict.toml": STRICT_RESET}), version=2, signer=fleet, created_ms=T0)
    assert device.install_bundle(message, fleet.public_bytes()) == 2
    return message


def test_install_takes_effect_and_survives_restart(device, fleet, tmp_path):
    assert device.judge(RESET, T0).verdict == "allow"
    _install_v2(device, fleet)
    j = device.judge(RESET, T0 + 1)
    assert (j.verdict, j.rule_ids, j.bundle_version) == ("block", ("LOCAL-1",), 2)
    again = load_engine(device_class="charger", mode="enforce", state_path=tmp_path / "state",
                        bundle_dir=tmp_path / "bundle", fleet_public_key=fleet.public_bytes())
    assert again.bundle_version == 2 and again.judge(RESET, T0 + 2).verdict == "block"
    assert not list((tmp_path / "bundle").glob("*.tmp"))


def _assert_refused(device, message, key, reason_part):
    with pytest.raises(BundleRejected) as info:
        device.install_bundle(message, key)
    assert reason_part in info.value.reason
    assert device.bundle_version == 2, "old bundle must stay in force"
    assert device.judge(RESET, T0 + 5).rule_ids == ("LOCAL-1",)
    assert device.last_bundle_rejection == info.value.reason


def test_tampered_bundle_refused(device, fleet):
    _install_v2(device, fleet)
    good = bytearray(build_bundle(_texts(), version=3, signer=fleet, created_ms=T0))
    good[len(good) // 2] ^= 0x01
    with pytest.raises(BundleRejected):
        device.install_bundle(bytes(good), fleet.public_bytes())
    assert device.bundle_version == 2


def test_replayed_bundle_refused(device, fleet):
    message = _install_v2(device, fleet)
    _assert_refused(device, message, fleet.public_bytes(), "not greater")


def test_downgraded_bundle_refused(device, fleet):
    _install_v2(device, fleet)
    old = build_bundle(_texts(), version=1, signer=fleet, created_ms=T0)
    _assert_refused(device, old, fleet.public_bytes(), "not greater")


def test_downgrade_refused_after_restart_even_if_bundle_file_lost(device, fleet, tmp_path):
    _install_v2(device, fleet)
    (tmp_path / "bundle" / "bundle.cose").unlink()
    again = load_engine(device_class="charger", state_path=tmp_path / "state", bundle_dir=tmp_path / "bundle")
    with pytest.raises(BundleRejected, match="not greater"):
        again.install_bundle(build_bundle(_texts(), version=2, signer=fleet, created_ms=T0), fleet.public_bytes())


def test_foreign_key_refused(device, fleet):
    _install_v2(device, fleet)
    rogue = build_bundle(_texts(), version=9, signer=Ed25519Signer.generate(), created_ms=T0)
    _assert_refused(device, rogue, fleet.public_bytes(), "signature")
    es = build_bundle(_texts(), version=9, signer=P256Signer.generate(), created_ms=T0)
    _assert_refused(device, es, fleet.public_bytes(), "signature")


def test_bundle_with_a_bad_rule_refused(device, fleet):
    _install_v2(device, fleet)
    evil = STRICT_RESET.replace('when = "True"', 'when = "().__class__"')
    message = build_bundle(_texts({"strict.toml": evil}), version=3, signer=fleet, created_ms=T0)
    _assert_refused(device, message, fleet.public_bytes(), "LOCAL-1")


def test_bundle_without_a_pack_for_this_device_refused(device, fleet):
    _install_v2(device, fleet)
    message = build_bundle({"tcu.toml": (PACKS / "tcu.toml").read_text()}, version=3, signer=fleet, created_ms=T0)
    _assert_refused(device, message, fleet.public_bytes(), "device class")


def test_window_state_survives_a_bundle_update(device, fleet):
    device.update_twin({"tx.active": False}, T0)
    device.judge(RESET, T0 + 1)
    device.judge(RESET, T0 + 2)
    device.install_bundle(build_bundle(_texts(), version=5, signer=fleet, created_ms=T0), fleet.public_bytes())
    assert device.judge(RESET, T0 + 3).verdict == "defer"  # CP-03 counted across the swap


_FUZZ_ENGINE = load_engine(device_class="charger")
_FUZZ_KEY = Ed25519Signer.generate().public_bytes()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_rejected_cleanly(data):
    with pytest.raises(BundleRejected):
        _FUZZ_ENGINE.install_bundle(data, _FUZZ_KEY)
    assert _FUZZ_ENGINE.bundle_version == 0
