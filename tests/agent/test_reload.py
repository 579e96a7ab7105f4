"""SIGHUP reload of the real daemon (its own process) while a shim streams records into it:
the reloadable options take effect (the rules mode flips a command's verdict between block
and alert), fixed options and broken files are refused with the options named (log, counter,
signed record) and change nothing, and not one record is lost or reordered."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from agent.config import AgentConfig, load
from agent.reload import diff
from agent.status import from_socket
from firmware_shim import Shim
from tests.agent_proc import AgentProcess, set_option
from tests.mqtt_broker import wait_for

BUSY = {"tx.active": True, "connector.1.cp_state": "C", "connector.1.current_a": 16.0}


def _cfg(tmp_path: Path, **sections: dict) -> AgentConfig:
    from agent.config import from_mapping
    doc = {"agent": {"device_id": "d", "state_dir": "s", "key_dir": "k"}, **sections}
    return from_mapping(doc, base_dir=tmp_path, env={})


def test_diff_sorts_changes_into_reloadable_and_fixed(tmp_path: Path) -> None:
    old = _cfg(tmp_path, rules={"mode": "monitor"}, spool={"max_bytes": 1 << 20})
    new = _cfg(tmp_path, rules={"mode": "enforce", "device_class": "tcu"},
               spool={"max_bytes": 1 << 21, "synchronous": "normal"}, ingest={"tcp_port": 7000, "max_connections": 8},
               ledger={"checkpoint_records": 64})
    ok, fixed = diff(old, new)
    assert ok == ["ingest.max_connections", "ledger.checkpoint_records", "spool.max_bytes", "rules.mode"]
    assert fixed == ["ingest.tcp_port", "spool.synchronous", "rules.device_class"]
    up = _cfg(tmp_path, uplink={"collector_public_key": "00", "tls_ca_file": "/a"})
    ok, fixed = diff(up, _cfg(tmp_path, uplink={"collector_public_key": "00", "tls_ca_file": "/b"}))
    assert (ok, fixed) == (["uplink.tls_ca_file"], [])
    ok, fixed = diff(up, _cfg(tmp_path, uplink={"collector_public_key": "00", "enabled": False}))
    assert (ok, fixed) == ([], ["uplink.enabled"])  # switching the uplink on or off needs a restart


def test_sighup_reload_under_load_loses_nothing() -> None:
    with AgentProcess(device_id="reload-1", rules_mode="monitor") as agent:
        config = load(agent.config)
        original = agent.config.read_text()
        shim = Shim(agent=agent.address_unix, ring_frames=200_000, ring_bytes=64 << 20, check_deadline_ms=5000)
        shim.start()
        shim.update(BUSY)
        sent = 0
        done = threading.Event()

        def stream() -> None:  # ~2000 records/s until told to stop
            nonlocal sent
            while not done.is_set():
                for _ in range(20):
                    shim.record("t.load", st=200, i=sent)
                    sent += 1
                time.sleep(0.01)

        writer = threading.Thread(target=stream)
        writer.start()

        def reload_with(text: str) -> None:
            target = sent + 500
            wait_for(lambda: sent >= target, 30, "records streaming")  # each reload lands mid-stream
            before = from_socket(config)["counters"].get("reload.requests", 0)
            agent.config.write_text(text)
            agent.signal(signal.SIGHUP)
            wait_for(lambda: from_socket(config)["counters"].get("reload.requests", 0) > before, 15, "reload")

        def verdict() -> str:
            v = shim.check("ocpp.UnlockConnector", {"connector_id": 1}, "csms")
            assert v.source == "agent", v
            return v.action

        try:
            assert verdict() == "alert"  # monitor: CP-01 fires but only alerts
            text = original
            for round_, mode in enumerate(["enforce", "monitor", "enforce"]):
                text = set_option(text, "mode", f'"{mode}"')
                text = set_option(text, "max_bytes", str((65 + round_) << 20))
                text = set_option(text, "checkpoint_records", str(512 + round_))
                text = set_option(text, "max_pending_replies", str(1000 + round_))
                reload_with(text)
                assert verdict() == ("block" if mode == "enforce" else "alert")
            st = from_socket(config)
            assert st["counters"]["reload.applied"] == 3 and st["spool"]["max_bytes"] == 67 << 20

            reload_with(set_option(set_option(text, "tcp_port", "7999"), "device_id", '"other"'))
            reload_with(text.replace("[ledger]", "[ledger\n"))  # not TOML
            reload_with(set_option(text, "mode", '"strict"'))    # not a mode
            st = from_socket(config)
            assert st["counters"]["reload.refused"] == 1 and st["counters"]["reload.failed"] == 2
            assert verdict() == "block"  # the refused reloads changed nothing
        finally:
            done.set()
            writer.join()
        assert shim.flush(30_000)
        shim.close()
        assert shim.stats()["dropped"] == {}
        assert agent.stop() == 0
        log = agent.log_text()
        assert "reload refused: agent.device_id, ingest.tcp_port cannot change at run time" in log
        assert "rules.mode = 'strict'" in log

        records = agent.records()
        mine = [r["x"]["i"] for r in records if r.get("api") == "t.load"]
        assert mine == list(range(sent)) and sent > 3000  # none lost, none reordered
        reloads = [r["x"]["changed"] for r in records if r.get("api") == "agent.reload"]
        assert reloads == [["ingest.max_pending_replies", "ledger.checkpoint_records", "spool.max_bytes",
                            "rules.mode"]] * 3
        refused = [r["x"] for r in records if r.get("api") == "agent.reload_refused"]
        assert refused[0] == {"fixed": ["agent.device_id", "ingest.tcp_port"]} and len(refused) == 3


def test_sighup_reload_of_tls_files_rebuilds_the_uplink(tmp_path: Path) -> None:
    """Certificate rotation: the agent starts with a client certificate the broker does not
    trust (mutual TLS, deploy/mosquitto's config), then agent.toml points at a good one and a
    SIGHUP rebuilds the uplink, which connects and ships: no restart, no record lost."""
    import shutil

    from agent.core.keys import generate_signer
    from tests.cloud_collector.pki import TestPKI
    from tests.cloud_collector.test_mosquitto_acl import DEPLOY
    from tests.mqtt_broker import Broker, free_port

    pki, stranger = TestPKI(tmp_path / "pki"), TestPKI(tmp_path / "other-ca")
    port = free_port()
    shutil.copy(DEPLOY / "veritrail.acl", tmp_path / "veritrail.acl")
    (tmp_path / "data").mkdir()
    text = (DEPLOY / "mosquitto.conf").read_text()
    for old, new in (("/etc/mosquitto/veritrail.acl", str(tmp_path / "veritrail.acl")),
                     ("/var/lib/mosquitto/", f"{tmp_path / 'data'}/"), ("/etc/mosquitto/certs/ca.crt", str(pki.ca_file)),
                     ("/etc/mosquitto/certs/server.crt", str(pki.server_cert)),
                     ("/etc/mosquitto/certs/server.key", str(pki.server_key)), ("listener 8883", f"listener {port} 127.0.0.1")):
        text = text.replace(old, new)
    bad_cert, bad_key = stranger.issue("reload-tls")
    good_cert, good_key = pki.issue("reload-tls")
    uplink = (f'\n[uplink]\nhost = "127.0.0.1"\nport = {port}\n'
              f'collector_public_key = "{generate_signer().public_bytes().hex()}"\n'
              f'tls_ca_file = "{pki.ca_file}"\ntls_cert_file = "{bad_cert}"\ntls_key_file = "{bad_key}"\n'
              f'batch_linger_ms = 100\nreconnect_min_s = 0.2\nreconnect_max_s = 0.5\n')
    with Broker(tmp_path / "broker", port=port, config_text=text), \
            AgentProcess(device_id="reload-tls", extra_toml=uplink) as agent:
        config = load(agent.config)
        shim = Shim(agent=agent.address_unix)
        for i in range(100):
            shim.record("t.tls", i=i)
        assert shim.flush(5000)
        wait_for(lambda: from_socket(config)["uplink"]["counts"].get("connect_failures", 0) >= 1
                 or from_socket(config)["uplink"].get("last_error"), 20, "the refused handshake")
        assert not from_socket(config)["uplink"]["connected"]

        agent.config.write_text(agent.config.read_text().replace(str(bad_cert), str(good_cert))
                                .replace(str(bad_key), str(good_key)))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: from_socket(config)["uplink"]["connected"], 20, "uplink connected with the new certificate")
        for i in range(100, 200):
            shim.record("t.tls", i=i)
        assert shim.flush(5000)
        st = from_socket(config)
        assert st["uplink"]["swaps"] == 1 and st["counters"]["reload.applied"] == 1
        wait_for(lambda: from_socket(config)["uplink"]["counts"].get("records_sent", 0) >= 200, 20, "records shipped")
        shim.close()
        assert agent.stop() == 0
        reloads = [r["x"]["changed"] for r in agent.records() if r.get("api") == "agent.reload"]
        assert reloads == [["uplink.tls_cert_file", "uplink.tls_key_file"]]
        assert [r["x"]["i"] for r in agent.records() if r.get("api") == "t.tls"] == list(range(200))
