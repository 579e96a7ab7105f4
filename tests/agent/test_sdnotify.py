"""systemd's notify protocol: the daemon (its own process, `veritrail agent run`) says
READY=1 once it listens, pings WATCHDOG=1 every WATCHDOG_USEC/2 while alive, withholds the
pings while the spool writer is stuck (a real stall: another process holds the spool's
write lock, as a hung disk or a stuck fsync would), resumes when it is free, and says
STOPPING=1 at an orderly stop."""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier
from agent.watchdog import WriterProbe
from firmware_shim import Shim
from tests.agent_proc import AgentProcess


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[tuple[float, str]] = []

    def read(self, timeout_s: float) -> list[str]:
        """Datagrams that arrive within ``timeout_s`` (each a list of KEY=VALUE lines)."""
        out = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data.decode()))
            out.append(data.decode())
        return out

    def wait_for(self, key: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            for message in self.read(min(left, 0.2)):
                if key in message.split("\n"):
                    return message
        raise TimeoutError(f"no {key} within {timeout_s} s; got {[m for _, m in self.messages][-5:]}")

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


def test_notifier_sends_to_path_and_abstract_sockets(tmp_path: Path) -> None:
    for address in (str(tmp_path / "n.sock"), f"@vt-test-{uuid.uuid4().hex[:12]}"):
        listener = NotifyListener(address)
        try:
            n = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "3000000"})
            assert n.enabled and n.watchdog_interval_s() == 1.5
            assert n.send("READY=1\nSTATUS=up")
            assert listener.read(1.0) == ["READY=1\nSTATUS=up"]
            n.close()
        finally:
            listener.close()


def test_notifier_without_socket_or_for_another_pid_does_nothing() -> None:
    assert not Notifier.from_env({}).send("READY=1")
    assert Notifier.from_env({"WATCHDOG_USEC": "1000000"}).watchdog_interval_s() is None
    other = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2)
    assert other.watchdog_interval_s() is None  # the pings are for process 1, not us
    broken = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/dir/notify.sock"})
    assert not broken.send("READY=1") and broken.failed == 1


class _FakeLedger:
    def __init__(self) -> None:
        self.on_commit: list = []
        self.backlog = 0
        self.sealer = type("S", (), {"pending": 0})()


def test_writer_probe_needs_work_handed_over_and_no_commit() -> None:
    now = [100.0]
    ledger = _FakeLedger()
    probe = WriterProbe(ledger, 2.0, clock=lambda: now[0])
    now[0] = 500.0
    assert probe(now[0]) is None          # idle for long: alive
    ledger.backlog, ledger.sealer.pending = 10, 10
    now[0] = 510.0
    assert probe(now[0]) is None          # only open records (not handed over): alive
    ledger.sealer.pending = 0             # sealed, handed to the writer
    now[0] = 511.0
    assert probe(now[0]) is None
    now[0] = 512.5
    assert "none committed for 2.5 s" in (probe(now[0]) or "")
    ledger.on_commit[0]()                 # a commit: progress
    assert probe(now[0]) is None


@pytest.fixture
def notify_socket() -> Iterator[NotifyListener]:
    listener = NotifyListener(f"@vt-notify-{uuid.uuid4().hex[:12]}")
    try:
        yield listener
    finally:
        listener.close()


def test_daemon_ready_pings_and_withholds_them_while_the_writer_is_stuck(notify_socket: NotifyListener) -> None:
    with AgentProcess(device_id="notify-1", options={"checkpoint_interval_ms": "100"}) as agent:
        agent.stop()  # started again with the notify environment
        agent.start(env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1000000"})  # ping every 0.5 s
        ready = notify_socket.wait_for("READY=1", 30)
        assert any(line.startswith("STATUS=seq ") for line in ready.split("\n"))
        notify_socket.wait_for("WATCHDOG=1", 5)
        notify_socket.wait_for("WATCHDOG=1", 5)

        shim = Shim(agent=agent.address_unix, check_deadline_ms=300)
        lock = sqlite3.connect(agent.paths.state_dir / "spool.db", timeout=10, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the writer's next commit waits on this lock
            for i in range(20):
                shim.record("t.stall", i=i)
            assert shim.flush(2000)
            # sealed within 100 ms, handed to the writer, stuck; the probe fires after 0.5 s
            deadline = time.monotonic() + 10
            while True:
                got = notify_socket.read(0.6)
                if not any("WATCHDOG=1" in m.split("\n") for m in got):
                    break
                assert time.monotonic() < deadline, "pings did not stop while the writer was stuck"
            quiet = notify_socket.read(2.5)
            assert not any("WATCHDOG=1" in m.split("\n") for m in quiet), quiet
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        notify_socket.wait_for("WATCHDOG=1", 15)  # the commit goes through: pings resume
        shim.close()
        assert agent.stop() == 0
        notify_socket.wait_for("STOPPING=1", 5)
        assert "watchdog ping withheld: writer: " in agent.log_text()
        records = [r for r in agent.records() if r.get("api") == "t.stall"]
        assert [r["x"]["i"] for r in records] == list(range(20))  # nothing lost to the stall

