"""``recb`` frames (record batches, docs/protocol.md): each item one record's fields packed by
the sender, checked one by one, sealed with the sender's bytes when nothing needed changing."""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.export import Trust, verify_stream
from agent.core.record import decode, is_canonical
from agent.frames import AGENT_SET, check, clean, split_recb
from agent.testing import AgentHarness, FrameClient, raw_frame
from agent.frames import encode_frame

from tests.agent.test_observe import ObservingJudge


def _blocks(h: AgentHarness) -> list[tuple[bytes, list[bytes]]]:
    from agent.spool import Spool
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        return [(b.message, list(b.records)) for b in spool.iter_blocks()]
    finally:
        spool.close()


def _spool_records(h: AgentHarness) -> list[bytes]:
    return [d for _, records in _blocks(h) for d in records]


def _verify(h: AgentHarness) -> None:
    trust = Trust.from_enrollment(json.loads(h.enrollment.read_text()))
    report = verify_stream(trust, _blocks(h))
    assert report.ok, report.as_dict()


def _sync(c: FrameClient, id_: int) -> dict:
    """A sync record: its ok means everything sent before it is sealed and committed."""
    reply = c.call({"t": "rec", "id": id_, "sync": True, "r": {"api": "end"}})
    assert reply["t"] == "ok", reply
    return reply


def _fields(data: bytes) -> dict[str, Any]:
    rec = decode(data)
    for key in ("seq", "boot", "mono", "wall"):
        rec.pop(key)
    return rec


RECS = [{"api": "ocpp.MeterValues", "src": {"id": "csms-1", "net": "10.0.0.7"}, "sub": "conn-1", "st": 200,
         "lat": 812, "rq": 120, "rs": 64, "x": {"n": 1}},
        {"api": "ocpp.StatusNotification", "st": "Available", "kind": "state"},
        {"api": "tcu.telemetry", "kind": "api", "x": {"speed": 80.5, "tags": ["a", None, True]}},
        dict({"api": "wide"}, **{f"k{i:02d}": i for i in range(20)})]  # map16 body


def test_recb_records_equal_rec_records_and_verify(tmp_path):
    with AgentHarness(tmp_path / "a") as h:
        c = h.client()
        for r in RECS:
            c.send({"t": "rec", "r": dict(r)})
        c.send({"t": "recb", "b": [msgpack.packb(r) for r in RECS]})
        _sync(c, 1)
        c.close()
    datas = [d for d in _spool_records(h) if decode(d).get("api") in {r["api"] for r in RECS}]
    assert len(datas) == 2 * len(RECS)
    via_rec, via_recb = datas[:len(RECS)], datas[len(RECS):]
    for a, b, r in zip(via_rec, via_recb, RECS):
        assert _fields(a) == _fields(b) == {**r, "kind": r.get("kind", "api")}
        assert is_canonical(b)
        # same bytes after the header (seq/mono/wall values differ)
        assert a[a.index(b"\xa3api"):] == b[b.index(b"\xa3api"):]
    _verify(h)


def test_a_non_canonical_sender_keeps_its_bytes_and_the_spool_verifies(tmp_path):
    # {"api": "odd", "lat": 5}: map16, str8 strings, uint32 — valid msgpack, not the shortest form
    odd = b"\xde\x00\x02\xd9\x03api\xd9\x03odd\xd9\x03lat\xce\x00\x00\x00\x05"
    with AgentHarness(tmp_path / "a") as h:
        c = h.client()
        c.send({"t": "recb", "b": [odd, msgpack.packb({"api": "plain"})]})
        _sync(c, 1)
        c.close()
    datas = {decode(d)["api"]: d for d in _spool_records(h)}
    assert _fields(datas["odd"]) == {"api": "odd", "lat": 5, "kind": "api"}
    assert odd[3:] in datas["odd"] and not is_canonical(datas["odd"])
    assert is_canonical(datas["plain"])
    _verify(h)


def test_bad_items_are_refused_one_by_one_and_the_others_kept(tmp_path):
    items = [msgpack.packb({"api": "good.0"}),
             b"\xc1",                                              # 1: not msgpack
             msgpack.packb([1, 2]),                                # 2: not a map
             msgpack.packb({"api": "bad", "lat": -1}),             # 3: negative lat
             "text",                                               # 4: not a bin
             msgpack.packb({"api": "moved", "seq": 5, "v": "x"}),  # agent-set: kept under x.shim_*
             msgpack.packb({"api": "ts", "x": msgpack.Timestamp(5)}),  # 6: ext (record.decode refuses it)
             b"\x82\xa3api\xa3dup\xa3api\xa4dup2",                 # a key twice: kept as decoded
             msgpack.packb({"api": "good.8"}) + b"\x00"]           # 8: trailing byte
    with AgentHarness(tmp_path / "a") as h:
        c = h.client()
        c.send({"t": "recb", "b": items})
        errs = [c.recv() for _ in range(6)]
        _sync(c, 1)
        c.close()
    assert [e["t"] for e in errs] == ["err"] * 6 and {e["code"] for e in errs} == {"invalid"}
    assert [e["msg"].split(":")[0] for e in errs] == [f"recb item {i}" for i in (1, 2, 3, 4, 6, 8)]
    assert "-1" not in "".join(e["msg"] for e in errs)  # no payload values echoed
    kept = [decode(d) for d in _spool_records(h)]
    kept = [r for r in kept if r.get("api") not in ("agent.start", "agent.stop", "end")]
    assert [r["api"] for r in kept] == ["good.0", "moved", "dup2"]
    assert kept[1]["x"] == {"shim_seq": 5, "shim_v": "x"} and kept[1]["seq"] != 5
    assert all(r["kind"] == "api" for r in kept)
    assert all(is_canonical(d) for d in _spool_records(h))
    _verify(h)


def test_oversized_batch_is_refused_and_counted(tmp_path):
    with AgentHarness(tmp_path / "a", ingest__max_batch_records=4) as h:
        c = h.client()
        c.send({"t": "recb", "b": [msgpack.packb({"api": f"r{i}"}) for i in range(5)]})
        err = c.recv()
        c.send({"t": "recb", "b": [msgpack.packb({"api": f"s{i}"}) for i in range(4)]})
        c.send({"t": "recb", "b": []})
        empty = c.recv()
        _sync(c, 1)
        status = c.call({"t": "status", "id": 2})["s"]
        c.close()
    assert err["code"] == "invalid" and "limit 4" in err["msg"]
    assert empty["code"] == "invalid"
    counters = status["counters"]
    assert counters["frames.recb_over_limit"] == 1 and counters["frames.recb_over_limit_records"] == 5
    apis = [decode(d)["api"] for d in _spool_records(h)]
    assert not any(a.startswith("r") and a[1:].isdigit() for a in apis)
    assert [a for a in apis if a.startswith("s")] == ["s0", "s1", "s2", "s3"]


def test_records_after_another_frame_in_the_same_read_are_kept(tmp_path):
    """rec, ping, rec, recb, rec in one write: every record is sealed, in order."""
    with AgentHarness(tmp_path / "a") as h:
        c = h.client()
        c.send_raw(encode_frame({"t": "rec", "r": {"api": "a1"}}) + encode_frame({"t": "ping", "id": 9})
                   + encode_frame({"t": "rec", "r": {"api": "a2"}})
                   + encode_frame({"t": "recb", "b": [msgpack.packb({"api": "b1"}), msgpack.packb({"api": "b2"})]})
                   + encode_frame({"t": "rec", "r": {"api": "a3"}}))
        assert c.recv() == {"t": "pong", "id": 9}
        _sync(c, 1)
        c.close()
    apis = [decode(d)["api"] for d in _spool_records(h)]
    assert [a for a in apis if a[0] in "ab" and a[1].isdigit()] == ["a1", "a2", "b1", "b2", "a3"]


def test_watched_records_in_a_batch_are_observed(tmp_path):
    judge = ObservingJudge()
    tamper = {"api": "ocpp.SecurityEventNotification", "src": {"id": "self"},
              "x": {"dir": "out", "args": {"type": "TamperDetectionActivated"}}}
    judged = {"api": "ocpp.SecurityEventNotification", "x": {"v": "allow", "args": {"type": "TamperDetectionActivated"}}}
    with AgentHarness(tmp_path / "a", engine=judge, ledger__checkpoint_interval_ms=50) as h:
        c = h.client()
        c.send({"t": "recb", "b": [msgpack.packb(r) for r in ({"api": "ocpp.MeterValues"}, tamper, judged)]})
        _sync(c, 1)
        end = time.monotonic() + 10
        while not any(decode(d).get("kind") == "alert" for d in _spool_records(h)):
            assert time.monotonic() < end, "no alert record"
            time.sleep(0.02)
        c.close()
    assert judge.observed == [{"cmd": "ocpp.SecurityEventNotification", "args": {"type": "TamperDetectionActivated"},
                               "src": {"id": "self"}, "sub": None}]


# --- the pure item splitter ----------------------------------------------------------------
values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
                      | st.text(max_size=8) | st.binary(max_size=8),
                      lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                      max_leaves=8)
keys = st.sampled_from(["api", "src", "sub", "st", "lat", "rq", "rs", "x", "other", "kind", "seq", "v"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=9))
def test_clean_agrees_with_check_and_split_matches_the_rec_path(r):
    decoded = msgpack.unpackb(msgpack.packb(r))
    if AGENT_SET.isdisjoint(decoded):
        assert clean(decoded) == (check(decoded) is None)
    else:
        assert not clean(decoded)
    body = msgpack.packb(r)
    bodies, kinds, records, problems = split_recb([body])
    # The rec path's fields (ingest.Connection._fields) for the same r:
    from agent.frames import sanitize
    fields = sanitize(dict(decoded)) if not AGENT_SET.isdisjoint(decoded) else dict(decoded)
    fields.setdefault("kind", "api")
    if check(fields) is not None:
        assert problems and not bodies
        return
    assert not problems and [{**records[0], "kind": records[0].get("kind", "api")}] == [fields]
    if kinds[0] is None:
        assert bodies[0] == body and list(fields)[-1] == "kind"
    elif bodies[0] == body:
        assert kinds[0] == decoded["kind"]
    else:
        assert bodies[0] == msgpack.packb(fields) and kinds[0] == fields["kind"]


def test_rec_frame_with_a_msgpack_timestamp_is_refused_not_sealed_unverifiable(tmp_path):
    """An ext type (a msgpack timestamp included) in a rec frame is refused as malformed:
    sealed, it would never verify at the collector (its decoder refuses ext types)."""
    import msgpack
    from agent.core.export import Trust, verify_stream
    from agent.spool import Spool
    from agent.testing import AgentHarness, AllowAllJudge
    h = AgentHarness(tmp_path / "ts", engine=AllowAllJudge()).start()
    try:
        c = h.client()
        body = msgpack.packb({"t": "rec", "r": {"api": "x", "when": msgpack.Timestamp(1, 2)}})
        c.sock.sendall(len(body).to_bytes(4, "big") + body)
        err = c.recv()
        assert err["t"] == "err" and err["code"] == "malformed"
        assert c.call({"t": "rec", "id": 2, "sync": True, "r": {"api": "after"}})["t"] == "ok"
    finally:
        h.stop()
    spool = Spool(h.config.spool_path, readonly=True)
    try:
        items = [(b.message, b.records) for b in spool.iter_blocks()]
    finally:
        spool.close()
    import json
    trust = Trust.from_enrollment(json.loads((h.dir / "enroll.json").read_text()))
    assert verify_stream(trust, items).ok
