"""`veritrail verify FILE`: clear report, exit 0 only when everything verifies."""

import json
import subprocess
import sys
from pathlib import Path

import msgpack

from agent.core.export import enrollment_doc, write_export
from tests.core.helpers import Device


def _write(path: Path, dev: Device, items) -> None:
    with open(path, "wb") as fh:
        write_export(fh, {"dev": dev.device_id,
                          "keys": [{"kid": dev.signer.kid, "alg": dev.alg, "pub": dev.signer.public_bytes()}],
                          "start": None}, items)


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "verify", *args], capture_output=True, text=True,
                          timeout=60)


def test_verify_cli_exit_codes_and_report(tmp_path: Path):
    dev = Device()
    for n in (3, 4):
        dev.batch(n)
    trust = tmp_path / "enroll.json"
    trust.write_text(json.dumps(enrollment_doc(dev.device_id, [(dev.signer.kid, dev.alg, dev.signer.public_bytes())],
                                               dev.k0)))
    good = tmp_path / "good.vtx"
    _write(good, dev, dev.items)
    out = _verify(str(good), "--trust", str(trust))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "VERIFIED" in out.stdout and "records 7 (seq 0..6)" in out.stdout

    out = _verify(str(good), "--json")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["keys_trusted"] is False and doc["fs_checked"] is False

    rec = msgpack.unpackb(dev.items[1][1][2])
    rec["st"] = 403
    tampered = list(dev.items)
    tampered[1] = (dev.items[1][0], dev.items[1][1][:2] + [msgpack.packb(rec)] + dev.items[1][1][3:])
    bad = tmp_path / "bad.vtx"
    _write(bad, dev, tampered)
    out = _verify(str(bad), "--trust", str(trust), "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"]["code"] == "root_mismatch"
    out = _verify(str(bad), "--trust", str(trust))
    assert "FAILED" in out.stdout and "checkpoint 1" in out.stdout

    junk = tmp_path / "junk.vtx"
    junk.write_bytes(b"\x00\x01garbage")
    out = _verify(str(junk))
    assert out.returncode == 2 and "malformed export" in out.stderr
    out = _verify(str(tmp_path / "missing.vtx"))
    assert out.returncode == 2
