"""`veritrail agent install-service`: the unit systemd would run, checked by systemd's own
tools where they exist (verify, security --offline), its content pinned, and the daemon
shown to work under the one sandbox rule a test can apply without systemd
(MemoryDenyWriteExecute, through the kernel's PR_SET_MDWE)."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.daemon_cli import main as agent_main
from agent.service_unit import UnitOptions, render_unit
from firmware_shim import Shim
from tests.agent_proc import ROOT, AgentProcess

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_content_hardening_notify_watchdog_restart_journal() -> None:
    d = directives(render_unit(UnitOptions(user="vtagent", state_dir="/data/vt", exec_path="/opt/vt/bin/veritrail")))
    one = {k: v[0] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main" and one["WatchdogSec"] == "30"
    assert one["ExecStart"] == "/opt/vt/bin/veritrail agent run --config /data/vt/agent.toml --log-level INFO"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "always" and int(one["RestartSec"]) > 0 and "StartLimitBurst" in one
    assert one["User"] == one["Group"] == "vtagent"
    assert one["ProtectSystem"] == "strict" and d["ReadWritePaths"] == ["/data/vt"]  # the only writable path
    assert "StateDirectory" not in one  # not under /var/lib: the maker provides the dir
    for key in ("NoNewPrivileges", "PrivateTmp", "MemoryDenyWriteExecute", "PrivateDevices", "RestrictSUIDSGID"):
        assert one[key] == "yes", key
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["MemoryMax"] == "96M"
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert one["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert one["StandardError"] == "journal" and one["LogLevelMax"] == "info"
    var_lib = directives(render_unit(UnitOptions(exec_path="/opt/vt/bin/veritrail")))
    assert var_lib["StateDirectory"] == ["veritrail"] and var_lib["ReadWritePaths"] == ["/var/lib/veritrail"]


def test_bad_options_are_refused_with_the_option_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["install-service", "--user", "9bad user", "--print"]) == 2
    assert "--user" in capsys.readouterr().err
    assert agent_main(["install-service", "--dir", "relative/dir", "--print"]) == 2
    assert "--dir" in capsys.readouterr().err


def test_install_service_writes_unit_and_sysusers_under_root(tmp_path: Path) -> None:
    assert agent_main(["install-service", "--root", str(tmp_path), "--user", "veritrail",
                       "--dir", "/var/lib/veritrail"]) == 0
    unit = (tmp_path / "etc/systemd/system/veritrail-agent.service").read_text()
    assert "User=veritrail" in unit and "ReadWritePaths=/var/lib/veritrail" in unit
    assert (tmp_path / "etc/sysusers.d/veritrail.conf").read_text().splitlines()[-1] == \
        'u veritrail - "Veritrail agent" /var/lib/veritrail'


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (no systemd on this host)")
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    unit = tmp_path / "veritrail-agent.service"
    unit.write_text(render_unit(UnitOptions(exec_path=str(Path(sys.executable).parent / "veritrail"))))
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values and only warns: any output is a failure
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr
    sec = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(unit)], capture_output=True,
                         text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    if sec.returncode != 0 and m is None:
        pytest.skip(f"systemd-analyze security --offline not supported here: {sec.stderr.strip()[:200]}")
    assert m is not None and float(m.group(1)) <= 2.0, sec.stdout[-3000:]


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65,1,0,0,0))"])
    return probe.returncode == 0


# PR_SET_MDWE (65) refuses W+X mappings, PR_SET_NO_NEW_PRIVS (38): both survive the exec
MDWE_EXEC = ("import ctypes,os,sys\nlibc=ctypes.CDLL(None)\n"
             "assert libc.prctl(65,1,0,0,0)==0 and libc.prctl(38,1,0,0,0)==0\nos.execv(sys.argv[1],sys.argv[1:])")


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)")
def test_daemon_runs_with_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes is in the unit: the daemon (rules, signing through
    libcrypto via ctypes, SQLite) must not need a writable and executable mapping."""
    with AgentProcess(device_id="mdwe-1", rules_mode="enforce") as agent:
        agent.stop()
        wrapper = agent.dir / "mdwe.py"
        wrapper.write_text(MDWE_EXEC)
        agent.proc = subprocess.Popen([sys.executable, str(wrapper), sys.executable, "-m", "agent.cli", "agent",
                                       "run", "--config", str(agent.config)], cwd=ROOT,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(agent.log, "ab"))
        from tests.mqtt_broker import wait_for
        wait_for(lambda: agent.sock.exists() or agent.proc.poll() is not None, 30, "agent socket")
        assert agent.proc.poll() is None, agent.log_text()[-2000:]
        flags = Path(f"/proc/{agent.proc.pid}/status").read_text()
        shim = Shim(agent=agent.address_unix, check_deadline_ms=5000)
        try:
            shim.record("t.mdwe", st=200)
            v = shim.check("ocpp.Reset", {"type": "Soft"}, "csms")
            assert v.source == "agent", v
        finally:
            shim.close()
        assert agent.stop() == 0, agent.log_text()[-2000:]
        assert [r["api"] for r in agent.records() if r["api"] == "t.mdwe"] == ["t.mdwe"]
        assert "NoNewPrivs:\t1" in flags
        inherited = subprocess.run([sys.executable, str(wrapper), sys.executable, "-c",
                                    "import ctypes; print(ctypes.CDLL(None).prctl(66,0,0,0,0))"],
                                   capture_output=True, text=True, check=True)
        assert inherited.stdout.strip() == "1"  # PR_GET_MDWE: the rule held across the exec
