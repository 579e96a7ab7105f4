"""Evidence bundles built from the store and checked by agent.core.evidence_verify."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core import evidence as fmt
from agent.core.errors import LogFormatError
from agent.core.evidence_verify import Anchor, Trust, verify_bundle
from agent.core.keys import generate_signer
from agent.core.note import NoteSigner, COSIG_TYPE, parse_note
from agent.core.keys import Ed25519Signer
from cloud_collector import evidence
from cloud_collector.store.sqlite import SQLiteStore
from cloud_collector.tlog import TransparencyLog, log_signer
from cloud_collector.verify import process_batch
from tests.cloud_collector.chains import DeviceChain

NOW = 1_700_000_100_000


@pytest.fixture
def world(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    devs = [DeviceChain("cp-0001"), DeviceChain("cp-0002")]
    for d in devs:
        store.enroll(d.trust(), NOW)
    a, b = devs
    process_batch(store, a.device_id, [a.cp(5), a.cp(0, why="heartbeat"), a.cp(7)], NOW)
    a.sealer.rotate(generate_signer())                      # the next checkpoint names a new key
    process_batch(store, a.device_id, [a.cp(2, why="rotate"), a.cp(4)], NOW + 1)
    process_batch(store, b.device_id, [b.cp(3, kind="cmd", v="alert", r=["R1"])], NOW + 2)
    lg = TransparencyLog(store, log_signer(generate_signer()))
    lg.integrate_all()
    yield store, devs, lg
    store.close()


def trust_of(devs, log=None, **kw) -> Trust:
    anchors = tuple(Anchor(d.signer.kid, d.signer.alg, d.signer.public_bytes(), d.device_id, "enrollment file")
                    for d in devs)
    return Trust(anchors, {d.device_id: d.k0 for d in devs}, log, **kw)


REFS = [{"dev": "cp-0001", "first": 3, "last": 6}, {"dev": "cp-0001", "first": 14, "last": 15},
        {"dev": "cp-0002", "first": 1, "last": 1}]


def test_a_bundle_across_devices_and_a_key_rotation_verifies(world):
    store, devs, lg = world
    data = fmt.encode(evidence.build(store, REFS))
    report = verify_bundle(data, trust_of(devs, lg.signer.verifier))
    assert report.ok, [s for s in report.steps if not s.ok]
    names = [s.name for s in report.steps]
    assert "device cp-0001: checkpoint 4 signature" in names          # signed by the rotated key
    assert any("collector's log" in s.name for s in report.steps)
    assert report.proves and report.does_not_prove
    # the same, with the registry's trust (the dashboard's "verify again")
    assert evidence.verify_again(store, data).ok


def test_tampering_with_any_part_fails(world):
    store, devs, lg = world
    b = evidence.build(store, REFS)
    trust = trust_of(devs, lg.signer.verifier)
    d0 = b.devices[0]
    c0 = d0.checkpoints[0]
    r0 = c0.records[0]
    import dataclasses as dc
    variants = {
        "record bytes": dc.replace(b, devices=(dc.replace(d0, checkpoints=(dc.replace(
            c0, records=(dc.replace(r0, data=r0.data[:-1] + b"\x00"),) + c0.records[1:]),) + d0.checkpoints[1:]),)
            + b.devices[1:]),
        "records reordered": dc.replace(b, devices=(dc.replace(d0, checkpoints=(dc.replace(
            c0, records=(dc.replace(c0.records[1], seq=r0.seq), dc.replace(r0, seq=c0.records[1].seq))
            + c0.records[2:]),) + d0.checkpoints[1:]),) + b.devices[1:]),
        "a record dropped": dc.replace(b, devices=(dc.replace(d0, checkpoints=(dc.replace(
            c0, records=c0.records[1:]),) + d0.checkpoints[1:]),) + b.devices[1:]),
        "log index": dc.replace(b, devices=(dc.replace(d0, checkpoints=(dc.replace(
            c0, log=dc.replace(c0.log, index=c0.log.index + 1)),) + d0.checkpoints[1:]),) + b.devices[1:]),
        "received time": dc.replace(b, devices=(dc.replace(d0, checkpoints=(dc.replace(
            c0, log=dc.replace(c0.log, received_ms=c0.log.received_ms + 1)),) + d0.checkpoints[1:]),) + b.devices[1:]),
        "no log": dc.replace(b, log=None),
        "wider ref": dc.replace(b, refs=(fmt.Ref("cp-0001", 2, 6),) + b.refs[1:]),
    }
    for what, v in variants.items():
        assert not verify_bundle(fmt.encode(v), trust).ok, what
    # a stranger's keys: nothing verifies
    assert not verify_bundle(fmt.encode(b), trust_of([DeviceChain("cp-0001"), DeviceChain("cp-0002")])).ok
    # another log key
    assert not verify_bundle(fmt.encode(b), trust_of(devs, log_signer(generate_signer()).verifier)).ok


def test_one_flipped_bit_anywhere_fails(world):
    store, devs, lg = world
    data = fmt.encode(evidence.build(store, REFS[:1]))
    trust = trust_of(devs, lg.signer.verifier)
    assert verify_bundle(data, trust).ok
    rng = random.Random(13)
    for bit in rng.sample(range(len(data) * 8), 600):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify_bundle(bytes(flipped), trust).ok, f"bit {bit} (byte {data[bit // 8 - 10:bit // 8 + 10]!r})"


def test_witness_cosignatures_are_carried_and_checked(world):
    store, devs, lg = world
    size, _, note = store.tlog_head()
    w = NoteSigner("witness.example/w1", Ed25519Signer(bytes(range(32))), COSIG_TYPE)
    line = w.cosign_line(parse_note(note).text, 1_700_000_000)
    with store.transaction():
        store.tlog_add_cosig(size, w.verifier.vkey(), line, NOW)
    data = fmt.encode(evidence.build(store, REFS[2:]))
    assert verify_bundle(data, trust_of(devs, lg.signer.verifier, witnesses=(w.verifier,))).ok
    other = NoteSigner("witness.example/w2", Ed25519Signer(bytes(32)), COSIG_TYPE)
    r = verify_bundle(data, trust_of(devs, lg.signer.verifier, witnesses=(other.verifier,)))
    assert not r.ok and any(s.name == "witness cosignatures" and not s.ok for s in r.steps)


def test_unknown_alert_and_unstored_records_are_clear_errors(world):
    store, devs, lg = world
    with pytest.raises(evidence.EvidenceUnavailable, match="no alert"):
        evidence.alert_refs(store, 999)
    with pytest.raises(evidence.EvidenceUnavailable, match="not stored"):
        evidence.build(store, [{"dev": "cp-0001", "first": 0, "last": 10_000 - 1}])
    with pytest.raises(evidence.EvidenceUnavailable):
        evidence.build(store, [{"dev": "cp-0001", "first": 0, "last": 10**6}])
    alerts = [a for a in store.alerts("cp-0002", 10) if a["kind"] == "verdict_alert"]
    assert len(alerts) == 3
    for a in alerts:
        assert evidence.alert_refs(store, a["id"]) == [{"dev": "cp-0002", "first": a["seq_first"], "last": a["seq_first"]}]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_bundle_decoder_gives_a_bundle_or_our_error(data):
    try:
        b = fmt.decode(data)
    except LogFormatError:
        return
    assert fmt.encode(b) == data


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["format", "refs", "devices", "log", "dev", "first", "last", "keys",
                                         "checkpoints", "cose", "records", "seq", "data", "proof"]), c, max_size=5),
                    max_leaves=20))
def test_bundle_decoder_on_json_shapes_gives_a_bundle_or_our_error(obj):
    import json
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    try:
        fmt.decode(data)
    except LogFormatError:
        pass
    assert not verify_bundle(data, Trust()).ok
