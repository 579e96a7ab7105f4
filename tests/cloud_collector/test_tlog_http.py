"""The log over HTTP: routes, `log verify` catching rewritten history, and a real witness."""

from __future__ import annotations

import threading
import urllib.request

import pytest

from agent.core import evidence as fmt
from agent.core import tlog
from agent.core.keys import generate_signer
from agent.core.note import open_checkpoint, parse_note
from cloud_collector.store.sqlite import SQLiteStore
from cloud_collector.tlog import TransparencyLog, log_signer
from cloud_collector.tlog.audit import Auditor, Fetcher
from cloud_collector.tlog.witness import Witness, WitnessError, request_cosignature
from cloud_collector.verify import process_batch
from tests.cloud_collector.chains import DeviceChain
from tests.cloud_collector.http_app import TOKEN, LogServer
from tests.mqtt_broker import free_port

NOW = 1_700_000_100_000


class World:
    def __init__(self, tmp_path) -> None:
        self.store = SQLiteStore(str(tmp_path / "c.db"))
        self.devs = [DeviceChain(f"cp-{i:04d}") for i in range(3)]
        for d in self.devs:
            self.store.enroll(d.trust(), NOW)
        self.signer = log_signer(generate_signer())
        self.log = TransparencyLog(self.store, self.signer)
        self.now = NOW
        self.tmp = tmp_path

    def grow(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            for d in self.devs:
                self.now += 1
                process_batch(self.store, d.device_id, [d.cp(2), d.cp(1)], self.now)
        self.log.integrate_all()

    def auditor(self, name: str = "auditor") -> Auditor:
        return Auditor(Fetcher(self.url + "/log", TOKEN), self.tmp / name, self.signer.verifier)

    def rebuild_from_checkpoints(self, order: str = "received_ms, dev, cp") -> None:
        """What a cheating operator does after editing the checkpoints table: throw the log
        away and integrate the stored checkpoints again, signing with the real key."""
        q = self.store._q
        with self.store.transaction():
            for t in ("tlog_leaves", "tlog_tiles", "tlog_heads", "tlog_queue", "tlog_cosigs"):
                q(f"DELETE FROM {t}")
            q("UPDATE tlog_state SET size = 0")
            for dev, cp, h, r in q(f"SELECT dev, cp, hash, received_ms FROM checkpoints ORDER BY {order}"):
                self.store.tlog_queue(dev, cp, bytes(h), r)
        self.log.integrate_all()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    w.grow(2)
    with LogServer(w.store) as srv:
        w.url = srv.url
        yield w
    w.store.close()


def get(url: str, token: str | None = TOKEN) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_routes_serve_checkpoint_tiles_and_entries(world):
    status, body, headers = get(world.url + "/log/checkpoint")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    cp, _ = open_checkpoint(body, world.signer.verifier)
    assert cp.size == 12
    status, tile, _ = get(world.url + "/log/" + tlog.tile_path(0, 0, 12))
    assert status == 200 and len(tile) == 12 * 32
    status, bundle, _ = get(world.url + "/log/" + tlog.tile_path("entries", 0, 12))
    entries = tlog.decode_bundle(bundle, 12)
    assert [tlog.leaf_hash(e) for e in entries] == tlog.split_tile(tile, 12)
    assert tlog.decode_entry(entries[0]).dev == "cp-0000"
    assert get(world.url + "/log/tile/0/000.p/5")[1] == tile[:5 * 32]     # a smaller partial: a prefix
    assert get(world.url + "/log/tile/0/000")[0] == 404                   # not full yet
    assert get(world.url + "/log/tile/0/000.p/13")[0] == 404
    assert get(world.url + "/log/tile/00/000.p/5")[0] == 400
    assert get(world.url + "/log/tile/entries/x000.p/5")[0] == 400
    assert get(world.url + "/log/checkpoint", token=None)[0] == 401
    assert get(world.url + "/log/tile/0/000.p/5", token="wrong")[0] == 401


def test_evidence_routes(world):
    alert_id = world.store._q("SELECT id FROM alerts ORDER BY id LIMIT 1")
    if not alert_id:
        d = world.devs[0]
        process_batch(world.store, d.device_id, [d.cp(1, kind="cmd", v="block", r=["R9"])], world.now + 1)
        world.log.integrate_all()
        alert_id = world.store._q("SELECT id FROM alerts ORDER BY id LIMIT 1")
    aid = alert_id[0][0]
    status, body, headers = get(f"{world.url}/api/alerts/{aid}/evidence")
    assert status == 200 and "attachment" in headers["content-disposition"]
    assert fmt.decode(body).refs
    req = urllib.request.Request(f"{world.url}/api/alerts/{aid}/evidence/verify", method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    import json
    with urllib.request.urlopen(req, timeout=10) as r:
        report = json.loads(r.read())
    assert report["ok"] and all(s["ok"] for s in report["steps"]) and report["does_not_prove"]
    status, body, _ = get(f"{world.url}/api/alerts/99999/evidence")
    assert status == 404 and json.loads(body)["error"] == "evidence_unavailable"


def test_log_verify_follows_an_honest_log(world):
    a = world.auditor()
    assert a.check().status == "first"
    world.grow()
    r = a.check()
    assert r.ok and r.status == "extended" and (r.old_size, r.new_size) == (12, 18) and r.checked_entries == 6
    assert a.check(full=True).status == "unchanged"


@pytest.mark.parametrize("tamper", ["delete", "alter", "reorder"])
def test_rewriting_stored_checkpoints_is_caught_by_log_verify(world, tamper):
    a = world.auditor()
    assert a.check().ok                                   # the auditor saw size 12
    q = world.store._q
    if tamper == "delete":
        q("DELETE FROM checkpoints WHERE dev = 'cp-0001' AND cp = 1")
    elif tamper == "alter":
        q("UPDATE checkpoints SET hash = ? WHERE dev = 'cp-0001' AND cp = 1", (b"\x00" * 32,))
    world.rebuild_from_checkpoints("received_ms DESC, dev, cp" if tamper == "reorder" else "received_ms, dev, cp")
    if tamper == "delete":
        r = a.check()
        assert not r.ok and r.status == "rolled_back" and (r.old_size, r.new_size) == (12, 11), r
    else:
        r = a.check()
        assert not r.ok and r.status == "forked" and (r.old_size, r.new_size) == (12, 12), r
    world.grow()                                          # and after the log grows past what was seen
    r = a.check()
    assert not r.ok and r.status == "rewritten" and r.old_size == 12 and r.new_size > 12, r
    assert list((world.tmp / "auditor" / "conflicts").iterdir())   # both signed checkpoints kept as proof


@pytest.mark.parametrize("tamper", ["delete_leaf", "alter_leaf", "swap_leaves"])
def test_editing_the_log_tables_in_place_is_caught_by_a_full_check(world, tamper):
    a = world.auditor()
    assert a.check().ok
    q = world.store._q
    if tamper == "delete_leaf":
        q("DELETE FROM tlog_leaves WHERE idx = 4")
    elif tamper == "alter_leaf":
        q("UPDATE tlog_leaves SET received_ms = received_ms + 1 WHERE idx = 4")
    else:
        (d4, c4), (d5, c5) = q("SELECT dev, cp FROM tlog_leaves WHERE idx IN (4, 5) ORDER BY idx")
        q("UPDATE tlog_leaves SET dev = 'x', cp = -1 WHERE idx = 4")
        q("UPDATE tlog_leaves SET dev = ?, cp = ? WHERE idx = 5", (d4, c4))
        q("UPDATE tlog_leaves SET dev = ?, cp = ? WHERE idx = 4", (d5, c5))
    r = a.check(full=True)
    assert not r.ok and r.status in ("bad_entries", "unavailable") and r.new_size == 12, r


def test_a_witness_cosigns_consistent_checkpoints_and_refuses_a_rewrite(world):
    wdir = world.tmp / "witness"
    wkey = Witness.init(wdir, "witness.example/w1")
    witness = Witness(wdir, [world.signer.verifier])
    server = witness.serve("127.0.0.1", free_port())
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert request_cosignature(world.store, url, wkey, now_ms=NOW) == 12
        world.grow()
        assert request_cosignature(world.store, url, wkey, now_ms=NOW) == 18   # with a consistency proof
        status, body, _ = get(world.url + "/log/checkpoint")
        note = parse_note(body)
        assert len(note.signatures) == 2                                         # the log's and the witness's
        world.rebuild_from_checkpoints("received_ms DESC, dev, cp")
        world.grow()
        with pytest.raises(WitnessError) as exc:
            request_cosignature(world.store, url, wkey, now_ms=NOW)
        assert exc.value.status == 422
    finally:
        server.shutdown()


def test_openapi_describes_the_log_and_evidence_routes(tmp_path):
    from tests.cloud_collector.http_app import make_app
    paths = make_app(SQLiteStore(str(tmp_path / "c.db"))).openapi()["paths"]
    for p in ("/log/checkpoint", "/log/tile/{level}/{n}", "/log/tile/entries/{n}", "/api/alerts/{alert_id}/evidence",
              "/api/alerts/{alert_id}/evidence/verify"):
        assert p in paths, sorted(paths)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.builds(
    lambda old, proof, tail: (f"old {old}\n" + "".join(p + "\n" for p in proof) + "\n" + tail).encode(),
    st.integers(0, 30), st.lists(st.sampled_from(["AAAA", "x", "A" * 43 + "=", ""]), max_size=3), st.text(max_size=80)))
def test_witness_request_decoder_gives_a_result_or_a_witness_error(tmp_path_factory, body):
    d = tmp_path_factory.mktemp("w")
    Witness.init(d, "witness.example/fuzz")
    w = Witness(d, [log_signer(generate_signer()).verifier])
    try:
        w.add_checkpoint(body)
    except WitnessError as exc:
        assert exc.status in (400, 403, 404, 409, 422)


def test_witness_and_cosign_commands(tmp_path):
    """`veritrail witness init|run` as its own process, `veritrail log key|cosign` against it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from cloud_collector.config import create_key
    from tests.mqtt_broker import wait_for
    root = Path(__file__).resolve().parents[2]
    vt = [sys.executable, "-m", "agent.cli"]
    signer = create_key(tmp_path / "collector.key")
    (tmp_path / "collector.toml").write_text('[collector]\nstore = "collector.db"\nkey_file = "collector.key"\n')
    store = SQLiteStore(str(tmp_path / "collector.db"))
    d = DeviceChain()
    store.enroll(d.trust(), NOW)
    process_batch(store, d.device_id, [d.cp(3)], NOW)
    TransparencyLog(store, log_signer(signer)).integrate_all()
    log_vkey = subprocess.run(vt + ["log", "key", "--config", str(tmp_path / "collector.toml")], cwd=root,
                              capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert log_vkey == log_signer(signer).verifier.vkey()
    wkey = subprocess.run(vt + ["witness", "init", "--dir", str(tmp_path / "w"), "--name", "witness.example/w9"],
                          cwd=root, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    port = free_port()
    w = subprocess.Popen(vt + ["witness", "run", "--dir", str(tmp_path / "w"), "--log", log_vkey, "--port", str(port)],
                         cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        def cosigned():
            r = subprocess.run(vt + ["log", "cosign", "--config", str(tmp_path / "collector.toml"), "--witness",
                                     f"http://127.0.0.1:{port}", "--witness-key", wkey], cwd=root,
                               capture_output=True, text=True, timeout=60)
            return r.returncode == 0 and json.loads(r.stdout)
        out = wait_for(cosigned, 30, "the witness cosigns", interval_s=0.3)
        assert out["cosigned_size"] == 1
        assert [wv for wv, _ in store.tlog_cosigs(1)] == [wkey]
    finally:
        w.terminate()
        w.wait(10)
        store.close()
