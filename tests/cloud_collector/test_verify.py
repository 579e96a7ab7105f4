"""Collector verification against the SQLite store: exactly once, duplicates, forks, gaps, bridges."""

import pytest

from cloud_collector.errors import RegistryError, Rejected
from cloud_collector.store.sqlite import SQLiteStore
from cloud_collector.verify import VerifyLimits, process_batch

from tests.cloud_collector.chains import DeviceChain

NOW = 1_700_000_100_000


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"))
    yield s
    s.close()


@pytest.fixture
def dev(store):
    d = DeviceChain()
    store.enroll(d.trust(), NOW)
    return d


def stored_seqs(store, dev_id):
    return [s for s, _, _ in store.records(dev_id, 0, 10**9, 10**6)]


def alert_kinds(store):
    return sorted(a["kind"] for a in store.alerts(None, 100))


def test_accepts_in_order_and_receipts_the_last_checkpoint(store, dev):
    items = [dev.cp(3), dev.cp(0, why="heartbeat"), dev.cp(2)]
    r = process_batch(store, dev.device_id, items, NOW)
    assert r.counts["checkpoints"] == 3 and r.counts["records"] == 5
    assert stored_seqs(store, dev.device_id) == [0, 1, 2, 3, 4]
    upto, cp, h = r.receipt
    assert (upto, cp) == (4, 2) and h == store.stored_hash(dev.device_id, 2)
    assert store.device(dev.device_id)["records"] == 5


def test_resent_batch_is_a_duplicate_and_stores_nothing_twice(store, dev):
    items = [dev.cp(3), dev.cp(2)]
    process_batch(store, dev.device_id, items, NOW)
    r = process_batch(store, dev.device_id, items + [dev.cp(1)], NOW)
    assert r.counts["duplicates"] == 2 and r.counts["checkpoints"] == 1
    assert stored_seqs(store, dev.device_id) == list(range(6))
    assert r.receipt[1] == 2


def test_gap_waits_as_pending_then_fills(store, dev):
    a, b, c = dev.cp(1), dev.cp(1), dev.cp(1)
    r = process_batch(store, dev.device_id, [c], NOW)
    assert r.counts["pending"] == 1 and r.receipt is None
    process_batch(store, dev.device_id, [a], NOW)
    assert stored_seqs(store, dev.device_id) == [0]
    r = process_batch(store, dev.device_id, [b], NOW)
    assert stored_seqs(store, dev.device_id) == [0, 1, 2] and r.receipt[1] == 2
    assert store.device(dev.device_id)["pending_checkpoints"] == 0


def test_pending_is_bounded_and_counted(store, dev):
    dev.cp(1)
    ahead = [dev.cp(1) for _ in range(5)]
    r = process_batch(store, dev.device_id, ahead, NOW, VerifyLimits(max_pending_checkpoints=3))
    assert r.counts["pending"] == 3 and r.counts["rejected.pending_full"] == 2


def test_fork_is_a_critical_alert_and_keeps_the_first(store, dev):
    first = dev.cp(2)
    process_batch(store, dev.device_id, [first], NOW)
    # the same device key signs a different checkpoint 0 (a cloned or rolled-back device)
    other = DeviceChain(dev.device_id)
    other.k0, other.signer = dev.k0, dev.signer
    from agent.core.chain import ChainState, Sealer
    other.sealer = Sealer(ChainState.genesis(dev.device_id, dev.k0), dev.signer)
    forked = other.cp(4)
    r = process_batch(store, dev.device_id, [forked], NOW)
    assert r.counts["rejected.fork"] == 1 and r.stopped == "fork"
    [alert] = [a for a in store.alerts(None, 10) if a["kind"] == "fork"]
    assert alert["severity"] == "critical" and alert["cp"] == 0
    assert stored_seqs(store, dev.device_id) == [0, 1]


def test_forged_signature_is_rejected_and_nothing_stored(store, dev):
    msg, recs = dev.cp(2)
    forged = msg[:-3] + bytes(b ^ 0xFF for b in msg[-3:])  # flip bits in the signature
    r = process_batch(store, dev.device_id, [(forged, recs)], NOW)
    assert r.counts["rejected.bad_signature"] == 1
    assert stored_seqs(store, dev.device_id) == [] and "bad_signature" in alert_kinds(store)


def test_altered_record_breaks_the_root(store, dev):
    msg, recs = dev.cp(2)
    bad = [recs[0], recs[1].replace(b"Accepted", b"Rejected")]
    r = process_batch(store, dev.device_id, [(msg, bad)], NOW)
    assert r.counts["rejected.root_mismatch"] == 1 and stored_seqs(store, dev.device_id) == []


def test_unknown_device_is_rejected(store, dev):
    other = DeviceChain("cp-unknown")
    with pytest.raises(Rejected) as exc:
        process_batch(store, "cp-unknown", [other.cp(1)], NOW)
    assert exc.value.reason == "unknown_device"


def test_cross_device_checkpoint_is_rejected(store, dev):
    other = DeviceChain("cp-0002")
    store.enroll(other.trust(), NOW)
    r = process_batch(store, dev.device_id, [other.cp(1)], NOW)
    assert r.counts["rejected.device_mismatch"] == 1


def test_eviction_is_bridged_knowingly(store, dev):
    items = [dev.cp(2) for _ in range(5)]            # cps 0..4
    process_batch(store, dev.device_id, items[:2], NOW)
    ev = dev.evicted(2, 3)                            # cps 2, 3 evicted on the device; record in cp 5
    r = process_batch(store, dev.device_id, [items[4], ev], NOW)
    assert r.counts["bridges"] == 1 and r.receipt[1] == 5
    d = store.device(dev.device_id)
    assert d["bridges"][0]["from_cp"] == 2 and d["bridges"][0]["to_cp"] == 3
    assert stored_seqs(store, dev.device_id) == [0, 1, 2, 3, 8, 9, 10]
    assert {"eviction", "eviction_bridged"} <= set(alert_kinds(store))


def test_device_verdicts_become_alerts_linked_to_their_record(store, dev):
    dev.cp(1)
    msg, recs = dev.cp(1, kind="cmd", why="security", v="block", r=["tcu.no_unlock_moving"])
    process_batch(store, dev.device_id, dev.items, NOW)
    [a] = [a for a in store.alerts(None, 10) if a["kind"] == "verdict_block"]
    assert a["seq_first"] == 1 and a["cp"] == 1 and a["detail"]["r"] == ["tcu.no_unlock_moving"]


def test_revoked_key_makes_later_checkpoints_untrusted(store, dev):
    process_batch(store, dev.device_id, [dev.cp(1)], NOW)
    assert store.revoke(dev.signer.kid, 1, NOW) == [dev.device_id]
    r = process_batch(store, dev.device_id, [dev.cp(1)], NOW)
    assert r.counts["rejected.key_revoked"] == 1
    with pytest.raises(RegistryError):
        store.revoke("00" * 8, 0, NOW)


def test_enrolling_twice_needs_replace(store, dev):
    with pytest.raises(RegistryError):
        store.enroll(dev.trust(), NOW)
    store.enroll(dev.trust(), NOW, replace=True)
