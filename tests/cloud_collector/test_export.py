"""`veritrail collector export`: the stored chain as the export `veritrail verify` checks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.export import read_export, verify_stream
from agent.core.keys import generate_signer
from cloud_collector.export import ExportUnavailable, export_device
from cloud_collector.store.sqlite import SQLiteStore
from cloud_collector.verify import process_batch
from tests.cloud_collector.chains import DeviceChain

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_100_000


@pytest.fixture
def stored(tmp_path):
    store = SQLiteStore(str(tmp_path / "collector.db"))
    d = DeviceChain()
    store.enroll(d.trust(), NOW)
    process_batch(store, d.device_id, [d.cp(5), d.cp(0, why="heartbeat"), d.cp(7)], NOW)
    d.sealer.rotate(generate_signer())
    process_batch(store, d.device_id, [d.cp(2, why="rotate"), d.cp(4), d.cp(3)], NOW)
    yield store, d
    store.close()


def exported(store, d, **kw):
    buf = io.BytesIO()
    summary = export_device(store, d.device_id, buf, **kw)
    header, items = read_export(buf.getvalue())
    return summary, header, items


def test_whole_chain_verifies_against_the_enrollment(stored):
    store, d = stored
    summary, header, items = exported(store, d)
    assert summary["checkpoints"] == 6 and summary["records"] == 21
    report = verify_stream(d.trust(), items, header.get("start"))
    assert report.ok, report.error
    assert (report.first_seq, report.last_seq, report.last_cp) == (0, 20, 5)


def test_a_seq_range_exports_whole_checkpoints_and_verifies_from_its_start(stored):
    store, d = stored
    summary, header, items = exported(store, d, from_seq=13, to_seq=15)
    assert (summary["first_cp"], summary["last_cp"]) == (3, 4)
    assert header["start"]["cp"] == 3 and header["start"]["seq"] == 12
    report = verify_stream(d.trust(), items, header["start"])
    assert report.ok, report.error
    assert (report.first_seq, report.last_seq) == (12, 17)


def test_an_altered_stored_record_fails_verification(stored):
    store, d = stored
    store._q("UPDATE records SET data = ? WHERE dev = ? AND seq = 3", (b"\x80", d.device_id))
    _, header, items = exported(store, d)
    assert not verify_stream(d.trust(), items, header.get("start")).ok


def test_unstored_seq_is_a_clear_error(stored):
    store, d = stored
    with pytest.raises(ExportUnavailable, match="seq 999"):
        exported(store, d, from_seq=999)


def test_cli_export_then_verify(stored, tmp_path):
    store, d = stored
    conf = tmp_path / "collector.toml"
    conf.write_text('[collector]\nstore = "collector.db"\n')
    (tmp_path / "enroll.json").write_text(json.dumps(d.enrollment()))
    vt = [sys.executable, "-m", "agent.cli"]
    out = subprocess.run(vt + ["collector", "export", "--config", str(conf), d.device_id, "--from-seq", "5",
                               "-o", str(tmp_path / "x.export")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    v = subprocess.run(vt + ["verify", str(tmp_path / "x.export"), "--trust", str(tmp_path / "enroll.json"), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["first_seq"] == 5
