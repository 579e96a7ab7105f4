"""One test per attack on the chain: each is caught, with the right error (issue 2)."""

import os
from dataclasses import replace

import msgpack
import pytest

from agent.core import errors as E
from agent.core.chain import ChainState, Sealer
from agent.core.export import Trust, verify_stream
from agent.core.keys import generate_signer
from agent.core.verify import KeyInfo

from tests.core.helpers import Device


def run(trust: Trust, items):
    report = verify_stream(trust, items)
    assert not report.ok, "the attack was not caught"
    return report.error


@pytest.fixture(params=["Ed25519", "ES256"])
def dev(request):
    d = Device(alg=request.param)
    for n in (5, 3, 4, 6):
        d.batch(n)
    return d


def test_honest_stream_verifies(dev):
    report = verify_stream(dev.trust(), dev.items)
    assert report.ok, report.error
    assert (report.first_seq, report.last_seq, report.checkpoints) == (0, 17, 4)


def test_altered_record(dev):
    msg, recs = dev.items[1]
    rec = msgpack.unpackb(recs[1])
    rec["st"] = 500
    items = list(dev.items)
    items[1] = (msg, [recs[0], msgpack.packb(rec, use_bin_type=True), recs[2]])
    err = run(dev.trust(), items)
    assert isinstance(err, E.RootMismatch) and err.cp == 1


def test_dropped_record(dev):
    msg, recs = dev.items[2]
    items = list(dev.items)
    items[2] = (msg, recs[:1] + recs[2:])
    err = run(dev.trust(), items)
    assert isinstance(err, E.CountMismatch) and err.cp == 2


def test_reordered_records(dev):
    msg, recs = dev.items[0]
    items = list(dev.items)
    items[0] = (msg, [recs[1], recs[0]] + recs[2:])
    err = run(dev.trust(), items)
    assert isinstance(err, E.RecordSeqMismatch) and err.seq == 0 and err.got_seq == 1


def test_record_replayed_into_later_batch(dev):
    items = list(dev.items)
    msg, recs = items[3]
    items[3] = (msg, recs[:-1] + [dev.items[0][1][0]])
    err = run(dev.trust(), items)
    assert isinstance(err, E.RecordSeqMismatch) and err.seq == 17 and err.got_seq == 0


def test_whole_batch_replayed(dev):
    items = list(dev.items) + [dev.items[1]]
    err = run(dev.trust(), items)
    assert isinstance(err, E.Replayed) and err.cp == 1


def test_checkpoint_forged_with_another_key(dev):
    forger = Device(device_id=dev.device_id, alg=dev.alg, k0=dev.k0)
    for n in (5, 3):
        forger.batch(n)
    items = dev.items[:1] + forger.items[1:2]
    err = run(dev.trust(), items)
    assert isinstance(err, E.UnknownKey) and err.cp == 1


def test_forged_signature_under_the_devices_kid(dev):
    """Same kid in the header, but the signature was made by another key."""
    from agent.core import cose
    from agent.core.checkpoint import parse
    forger = generate_signer(dev.alg)
    forger.kid = dev.signer.kid  # claim the device's key id
    cp = parse(dev.items[1][0])
    forged = cose.sign1(cp.sign1.payload, forger)
    items = list(dev.items)
    items[1] = (forged, dev.items[1][1])
    err = run(dev.trust(), items)
    assert isinstance(err, E.BadSignature) and err.cp == 1


def test_records_spliced_from_another_device(dev):
    other = Device(device_id="dev-B", alg=dev.alg)
    other.batch(5, sub="VIN-OTHER")  # different content from A's records
    # Splice B's checkpoint+records into A's stream, and B's records under A's checkpoint.
    err = run(dev.trust(), [other.items[0]] + dev.items[1:])
    assert isinstance(err, E.DeviceMismatch) and err.got == "dev-B"
    err = run(dev.trust(), [(dev.items[0][0], other.items[0][1])] + dev.items[1:])
    assert isinstance(err, E.RootMismatch) and err.cp == 0


def test_suppressed_checkpoint_followed_by_later_ones(dev):
    items = dev.items[:1] + dev.items[2:]
    err = run(dev.trust(), items)
    assert isinstance(err, E.CheckpointGap) and (err.expected_cp, err.got_cp) == (1, 2)


def test_rolled_back_boot_epoch():
    d = Device()
    d.batch(2)
    d.restart()
    d.restart()
    d.batch(2)  # boot 2
    # An attacker re-seals with the real key and an older boot epoch (e.g. a restored image).
    st = replace(d.sealer.state, boot=1)
    d.sealer = Sealer(st, d.signer)
    d.batch(2)
    err = run(d.trust(), d.items)
    assert isinstance(err, E.BootRollback) and (err.previous, err.got) == (2, 1) and err.cp == 2


def test_retired_key_used_after_rotation():
    d = Device()
    d.batch(2)
    new = generate_signer("Ed25519")
    old = d.signer
    d.sealer.rotate(new)
    d.batch(2)  # cp 1: signed by the old key, names the new one
    d.batch(2)  # cp 2: signed by the new key
    assert verify_stream(d.trust(), d.items).ok
    # cp 2 re-made with the retired key (someone holding the old key after rotation)
    st = d.items[1]
    forged_dev = Sealer(replace(d.sealer.state, next_seq=4, next_cp=2,
                                prev_cp_hash=__import__("hashlib").sha256(st[0]).digest(),
                                fs_key=d.items and _fs_at(d.k0, 2)), old)
    forged_dev.append_batch([{"api": "x"}, {"api": "y"}], 1, 1)
    forged = forged_dev.seal(mono=1, wall=1, reason="size")
    err = run(d.trust(), d.items[:2] + [(forged.message, forged.records)])
    assert isinstance(err, E.KeyRetired) and err.cp == 2 and err.kid == old.kid


def _fs_at(k0, epoch):
    from agent.core.keys import fs_key_at
    return fs_key_at(k0, epoch)


def test_fork_two_checkpoints_with_one_number(dev):
    # The real key re-seals cp 2 with different records (e.g. after a disk snapshot restore).
    st = dev.sealer.state
    twin = Sealer(replace(st, next_seq=8, next_cp=2, prev_cp_hash=__import__("hashlib").sha256(dev.items[1][0]).digest(),
                          fs_key=_fs_at(dev.k0, 2)), dev.signer)
    twin.append_batch([{"api": "other"}] * 4, 1, 1)
    other = twin.seal(mono=1, wall=1, reason="size")
    err = run(dev.trust(), dev.items[:3] + [(other.message, other.records)])
    assert isinstance(err, E.Fork) and err.cp == 2


def test_revoked_key():
    d = Device()
    d.batch(2)
    d.batch(2)
    trust = d.trust()
    info = trust.keys[d.signer.kid]
    revoked = Trust(trust.device_id, {info.kid: replace(info, revoked_from_cp=1)}, trust.fs_k0)
    err = run(revoked, d.items)
    assert isinstance(err, E.KeyRevoked) and err.cp == 1


def test_forward_tag_with_wrong_epoch_key():
    d = Device()
    d.batch(2)
    # The device's sealer was given K_0 again for cp 1 (a rewrite after K_0 leaked would need it).
    st = d.sealer.state
    d.sealer = Sealer(replace(st, fs_key=d.k0), d.signer)
    d.batch(2)
    err = run(d.trust(), d.items)
    assert isinstance(err, E.BadForwardTag) and err.cp == 1


def test_eviction_bridge_is_accepted_knowingly():
    d = Device()
    d.batch(3)          # cp 0, seq 0..2
    d.batch(3)          # cp 1, seq 3..5  (evicted)
    d.batch(3)          # cp 2, seq 6..8  (evicted)
    h2 = __import__("hashlib").sha256(d.items[2][0]).digest()
    d.sealer.append({"kind": "agent", "api": "agent.evicted",
                     "x": {"first": 3, "last": 8, "cps": [1, 2], "last_cp_hash": h2}}, 9, 9)
    s = d.sealer.seal(mono=9, wall=9, reason="security")
    d.items.append((s.message, s.records))
    report = verify_stream(d.trust(), [d.items[0], d.items[3]])
    assert report.ok, report.error
    assert report.bridges == [{"from_seq": 3, "to_seq": 8, "from_cp": 1, "to_cp": 2}]
    # Without the eviction record the same gap is an error.
    assert isinstance(run(d.trust(), [d.items[0], d.items[2]]), E.CheckpointGap)
