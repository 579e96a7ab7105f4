"""End to end: a real alert's evidence bundle, checked offline by code that knows only the specs.

Real processes: Mosquitto, `veritrail agent run` (default charger rules), `veritrail collector
run` (ingest + the log's integrator). A remote UnlockConnector during a charging session
raises an alert; its bundle comes from GET /api/alerts/{id}/evidence and is verified here
with pycose (COSE_Sign1), cbor2, `cryptography` (Ed25519 of the signed note) and an RFC 6962
audit-path check written below: no import of the project's Merkle, verifier or note code.
Then one flipped bit anywhere must fail both that check and `veritrail verify-evidence`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pycose.keys import OKPKey
from pycose.messages import Sign1Message

from agent.config import load as load_agent_config
from agent.testing import FrameClient
from cloud_collector.store.sqlite import SQLiteStore
from tests.cloud_collector.http_app import TOKEN, LogServer
from tests.e2e.test_uplink_collector import Proc, vt
from tests.mqtt_broker import Broker, wait_for

ROOT = Path(__file__).resolve().parents[2]


# --- an independent verifier: RFC 6962, C2SP signed-note, docs/evidence.md -------------

def H(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def audit_path_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """RFC 6962 §2.1.1 recomputed recursively: the root that ``path`` leads to, or None."""
    def walk(m: int, n: int, path: list[bytes]) -> bytes | None:
        if n == 1:
            return leaf if not path else None
        if not path:
            return None
        k = 1 << ((n - 1).bit_length() - 1)
        *inner, sibling = path
        if m < k:
            sub = walk(m, k, inner)
            return None if sub is None else H(b"\x01" + sub + sibling)
        sub = walk(m - k, n - k, inner)
        return None if sub is None else H(b"\x01" + sibling + sub)
    return walk(index, size, path) if 0 <= index < size else None


def b64d(s: str) -> bytes:
    raw = base64.b64decode(s, validate=True)
    assert base64.b64encode(raw).decode() == s, "not canonical base64"
    return raw


def independent_verify(data: bytes, enrollment: dict, log_vkey: str) -> None:
    """Raises on any problem. Checks every field of the bundle against signed or proven data."""
    doc = json.loads(data.decode("ascii"))
    assert json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() == data, "canonical"
    assert doc["format"] == "veritrail-evidence/1" and set(doc) == {"format", "refs", "devices", "log"}
    # the log's signed note (c2sp.org/signed-note, tlog-checkpoint)
    name, key_id_hex, key_b64 = log_vkey.split("+", 2)
    raw_key = base64.b64decode(key_b64)
    assert raw_key[0] == 1 and H(name.encode() + b"\n" + raw_key)[:4].hex() == key_id_hex
    log = doc["log"]
    assert set(log) == {"vkey", "checkpoint", "witnesses"} and log["vkey"] == log_vkey and log["witnesses"] == []
    body, _, sig_block = log["checkpoint"].rpartition("\n\n")
    body += "\n"
    origin, size_s, root_s = body.split("\n")[:3]
    assert body == f"{origin}\n{size_s}\n{root_s}\n" and origin == name and size_s == str(int(size_s))
    log_size, log_root = int(size_s), b64d(root_s)
    (sig_line,) = sig_block.split("\n")[:-1]
    dash, sig_name, sig_b64 = sig_line.split(" ")
    sig = b64d(sig_b64)
    assert dash == "\u2014" and sig_name == name and sig[:4].hex() == key_id_hex and sig_block.endswith("\n")
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(sig[4:], body.encode())
    # device side
    trusted = {k["kid"]: bytes.fromhex(k["pub"]) for k in enrollment["keys"]}
    want = {(r["dev"], s) for r in doc["refs"] for s in range(r["first"], r["last"] + 1)}
    assert doc["refs"] and all(set(r) == {"dev", "first", "last"} for r in doc["refs"])
    seen = set()
    assert [d["dev"] for d in doc["devices"]] == [enrollment["device_id"]]
    for d in doc["devices"]:
        assert set(d) == {"dev", "keys", "checkpoints"}
        for k in d["keys"]:
            assert set(k) == {"kid", "alg", "pub", "rotation"} and k["rotation"] is None
            assert H(b64d(k["pub"]))[:8].hex() == k["kid"] and trusted[k["kid"]] == b64d(k["pub"])
            assert k["alg"] == "Ed25519"
        for c in d["checkpoints"]:
            msg = Sign1Message.decode(b64d(c["cose"]))
            kid = msg.phdr[next(h for h in msg.phdr if getattr(h, "identifier", h) == 4)].hex()
            msg.key = OKPKey(crv="Ed25519", x=trusted[kid])
            assert msg.verify_signature(), "COSE signature"
            p = cbor2.loads(msg.payload)
            assert p["dev"] == d["dev"]
            for r in c["records"]:
                rec_bytes = b64d(r["data"])
                got = audit_path_root(H(b"\x00" + rec_bytes), r["seq"] - p["first"], p["n"],
                                      [b64d(x) for x in r["proof"]])
                assert got == p["root"], f"record {r['seq']} not in the signed root"
                import msgpack
                rec = msgpack.unpackb(rec_bytes)
                assert rec["seq"] == r["seq"] and rec["boot"] == p["boot"]
                assert (d["dev"], r["seq"]) not in seen
                seen.add((d["dev"], r["seq"]))
            # the collector's log leaf: 0x01 | len(dev) | dev | u64 cp | sha256(cose) | u64 received_ms
            lg = c["log"]
            dev_b = d["dev"].encode()
            entry = (bytes([1, len(dev_b)]) + dev_b + p["cp"].to_bytes(8, "big") + H(b64d(c["cose"]))
                     + lg["received_ms"].to_bytes(8, "big"))
            assert audit_path_root(H(b"\x00" + entry), lg["index"], log_size, [b64d(x) for x in lg["proof"]]) == log_root
    assert seen == want, "records are exactly the refs"


# --- the world -----------------------------------------------------------------------

@pytest.fixture
def world(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    procs: list[Proc] = []
    try:
        cdir = tmp_path / "collector"
        out = json.loads(vt("collector", "init", "--dir", str(cdir), "--mqtt-port", str(broker.port),
                            "--api-port", "0").stdout)
        adir = tmp_path / "cp-0001"
        vt("agent", "init", "--device-id", "cp-0001", "--dir", str(adir))
        conf = adir / "agent.toml"
        conf.write_text(conf.read_text() + (
            f'\n[uplink]\ncollector_public_key = "{out["public_key"]}"\nport = {broker.port}\n'
            'batch_linger_ms = 100\nreceipt_timeout_s = 3.0\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n'))
        vt("collector", "enroll", "--config", str(cdir / "collector.toml"), "--file", str(adir / "enroll.json"))
        collector = Proc(["collector", "run", "--config", str(cdir / "collector.toml")], tmp_path / "collector.log")
        agent = Proc(["agent", "run", "--config", str(conf)], adir / "agent.log")
        procs = [collector.start(), agent.start()]
        config = load_agent_config(conf)
        wait_for(lambda: config.socket_path.exists(), 20, "agent socket")
        log_vkey = vt("log", "key", "--config", str(cdir / "collector.toml")).stdout.strip()
        yield {"tmp": tmp_path, "db": cdir / "collector.db", "socket": config.socket_path, "log_vkey": log_vkey,
               "enroll": adir / "enroll.json"}
    finally:
        for p in reversed(procs):
            p.stop(signal.SIGKILL if p is procs[0] else signal.SIGTERM)
        broker.stop()


def test_a_real_alerts_bundle_verifies_offline_and_any_flipped_bit_fails(world):
    c = FrameClient(world["socket"])
    try:
        for i in range(40):
            c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "src": {"id": "csms"}, "st": "Accepted", "x": {"i": i}}})
        c.send({"t": "upd", "s": {"tx.active": True, "connector.1.cp_state": "C", "connector.1.current_a": 32.0}})
        v = c.call({"t": "chk", "id": 1, "c": {"cmd": "ocpp.UnlockConnector", "args": {"connector_id": 1},
                                              "src": {"id": "csms", "net": "10.0.0.5"}, "sub": "1"}})
        assert v["t"] == "verdict" and v["v"] in ("alert", "block") and "CP-01" in v["r"]
        for i in range(10):
            c.send({"t": "rec", "r": {"api": "ocpp.MeterValues", "x": {"after": i}}})
    finally:
        c.close()
    store = SQLiteStore(str(world["db"]))

    def alert():
        rows = [a for a in store.alerts("cp-0001", 50) if a["kind"].startswith("verdict_") and a["seq_first"] == v["seq"]]
        return rows[0] if rows else None
    a = wait_for(alert, 60, "the collector's alert for the command", interval_s=0.3)
    cp_no = store.record_cp("cp-0001", v["seq"])
    wait_for(lambda: store.tlog_leaf_of("cp-0001", cp_no, hashlib.sha256(store.checkpoint_message("cp-0001", cp_no))
                                        .digest()) is not None and store.tlog_head() is not None
             and store.tlog_leaf_of("cp-0001", cp_no, hashlib.sha256(store.checkpoint_message("cp-0001", cp_no))
                                    .digest())[0] < store.tlog_head()[0], 30, "checkpoint in the log", interval_s=0.3)
    with LogServer(store) as srv:
        import urllib.request
        req = urllib.request.Request(f"{srv.url}/api/alerts/{a['id']}/evidence", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            data = resp.read()
        state = world["tmp"] / "auditor"
        bundle_file = world["tmp"] / "evidence.json"
        bundle_file.write_bytes(data)
        audit = subprocess.run([sys.executable, "-m", "agent.cli", "log", "verify", srv.url + "/log", "--state",
                                str(state), "--log-key", world["log_vkey"], "--token", TOKEN, "--full",
                                "--bundle", str(bundle_file)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert audit.returncode == 0 and "included" in audit.stdout, audit.stdout + audit.stderr
    store.close()
    enrollment = json.loads(world["enroll"].read_text())
    independent_verify(data, enrollment, world["log_vkey"])
    cli = [sys.executable, "-m", "agent.cli", "verify-evidence", str(bundle_file), "--trust", str(world["enroll"]),
           "--log-key", world["log_vkey"]]
    ok = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED" in ok.stdout and "It does not prove" in ok.stdout
    # one flipped bit anywhere: the independent check and the project's verifier both refuse
    from agent.core.evidence_verify import Anchor, Trust, verify_bundle
    from agent.core.note import parse_vkey
    anchors = tuple(Anchor(k["kid"], k["alg"], bytes.fromhex(k["pub"]), "cp-0001", "enrollment file")
                    for k in enrollment["keys"])
    trust = Trust(anchors, {"cp-0001": bytes.fromhex(enrollment["fs_k0"])}, parse_vkey(world["log_vkey"]))
    assert verify_bundle(data, trust).ok
    rng = random.Random(20261204)
    bits = rng.sample(range(len(data) * 8), min(len(data) * 8, 1500))
    for bit in bits:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        flipped = bytes(flipped)
        with pytest.raises(Exception):
            independent_verify(flipped, enrollment, world["log_vkey"])
        assert not verify_bundle(flipped, trust).ok, f"bit {bit}"
    for bit in bits[:3]:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bundle_file.write_bytes(bytes(flipped))
        assert subprocess.run(cli, cwd=ROOT, capture_output=True, timeout=60).returncode != 0


BLOCK_COLLECTOR_DEPS = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "starlette", "uvicorn", "psycopg", "zstandard", "jinja2", "pydantic",
                                  "cloud_collector", "hw_sim"):
            raise ImportError(f"{name} is not on a device")
        return None
sys.meta_path.insert(0, Block())
from agent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_verify_evidence_runs_on_a_device_only_install(tmp_path):
    """The CLI verifies a bundle with the collector's packages unimportable (a device install)."""
    from agent.core import evidence as fmt
    from agent.core.keys import generate_signer
    from cloud_collector import evidence
    from cloud_collector.tlog import TransparencyLog, log_signer
    from cloud_collector.verify import process_batch
    from tests.cloud_collector.chains import DeviceChain
    store = SQLiteStore(str(tmp_path / "c.db"))
    d = DeviceChain()
    store.enroll(d.trust(), 0)
    process_batch(store, d.device_id, [d.cp(4)], 1)
    lg = TransparencyLog(store, log_signer(generate_signer()))
    lg.integrate_all()
    (tmp_path / "b.json").write_bytes(fmt.encode(evidence.build(store, [{"dev": d.device_id, "first": 1, "last": 2}])))
    (tmp_path / "e.json").write_text(json.dumps(d.enrollment()))
    store.close()
    run = [sys.executable, "-c", BLOCK_COLLECTOR_DEPS, "verify-evidence", str(tmp_path / "b.json"),
           "--trust", str(tmp_path / "e.json"), "--log-key", lg.signer.verifier.vkey()]
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "VERIFIED" in out.stdout, out.stdout + out.stderr
    (tmp_path / "b.json").write_bytes(b"{}")
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "evidence bundle" in out.stderr, out.stderr
