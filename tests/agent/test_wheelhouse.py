"""`veritrail agent wheelhouse`: wheels for aarch64 and armv7l from PyPI, a report naming
every dependency that has no wheel for a target, and an install from the wheelhouse alone
(pip --no-index, dry run for the target platform) that resolves the agent completely.
Needs PyPI; skipped with the reason where it cannot be reached."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.daemon_cli import main as agent_main
from agent.wheelhouse import PLATFORMS, runtime_requirements


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def test_runtime_requirements_are_the_device_install_only() -> None:
    names = [r.split(">")[0].split("<")[0].split("=")[0] for r in runtime_requirements()]
    assert names == ["msgpack", "cryptography", "cbor2", "paho-mqtt"]  # no collector, simulator or dev extras
    assert any(r.startswith("zstandard") for r in runtime_requirements(("zstd",)))


@pytest.mark.skipif(not _pypi_reachable(), reason="PyPI (pypi.org:443) not reachable from here")
def test_wheelhouse_for_aarch64_and_armv7l_installs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wh"
    rc = agent_main(["wheelhouse", "--out", str(out), "--target", "aarch64", "--target", "armv7l"])
    report = json.loads((out / "report.json").read_text())
    targets = report["targets"]
    assert rc == (0 if all(t["complete"] for t in targets.values()) else 3)
    printed = capsys.readouterr().out
    for target, t in targets.items():
        assert all(w.endswith("-none-any.whl") or target in w for w in t["wheels"]), t["wheels"]
        assert "veritrail-0.1.0-py3-none-any.whl" in t["wheels"]
        for missing in t["missing"]:  # a gap names the requirement and, where known, the dependency
            assert missing.split(" ")[0] in report["requirements"]
            assert missing.split(" ")[0] in printed
    aarch64 = targets["aarch64"]
    assert aarch64["complete"] and aarch64["missing"] == []
    assert {w.split("-")[0] for w in aarch64["wheels"]} >= {"veritrail", "msgpack", "cryptography", "cbor2",
                                                           "paho_mqtt", "cffi"}
    # the device's install, from the wheelhouse alone: every requirement resolves to a wheel in it
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(out / "aarch64"),
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
           "--target", str(tmp_path / "t"), "--report", str(tmp_path / "install.json")]
    for plat in PLATFORMS["aarch64"]:
        cmd += ["--platform", plat]
    res = subprocess.run([*cmd, "veritrail"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    installed = {i["metadata"]["name"].lower() for i in json.loads((tmp_path / "install.json").read_text())["install"]}
    assert installed >= {"veritrail", "msgpack", "cryptography", "cbor2", "paho-mqtt", "cffi", "pycparser"}
