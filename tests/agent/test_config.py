"""Agent config: defaults, TOML, environment overrides, errors that name the option."""

from __future__ import annotations

import pytest

from agent.config import MAX_FRAME_BYTES, from_mapping, load, render
from agent.errors import ConfigError, NotInitialised

BASE = {"agent": {"device_id": "cp-1", "state_dir": "state", "key_dir": "keys"}}


def test_rendered_config_loads_with_the_defaults(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(render(device_id="cp-1", state_dir="state", key_dir="keys"))
    cfg = load(path, env={})
    assert cfg.device_id == "cp-1" and cfg.state_dir == str(tmp_path / "state")
    assert cfg.spool.max_bytes == 64 * 1024 * 1024 and cfg.ledger.checkpoint_records == 1024
    assert cfg.ledger.checkpoint_bytes == 64 * 1024
    assert cfg.ledger.checkpoint_interval_ms == 10_000 and cfg.ledger.heartbeat_interval_ms == 60_000
    assert cfg.ingest.max_frame_bytes == MAX_FRAME_BYTES and not cfg.uplink_enabled


def test_environment_overrides_the_file(tmp_path):
    cfg = from_mapping(BASE, base_dir=tmp_path, env={"VERITRAIL_SPOOL_MAX_BYTES": "1048576",
                                                     "VERITRAIL_AGENT_DEVICE_ID": "cp-2"})
    assert cfg.spool.max_bytes == 1048576 and cfg.device_id == "cp-2"


@pytest.mark.parametrize("doc, option", [
    ({"spool": {"max_bytes": 10}}, "spool.max_bytes"),
    ({"spool": {"synchronous": "sometimes"}}, "spool.synchronous"),
    ({"ledger": {"checkpoint_records": 0}}, "ledger.checkpoint_records"),
    ({"ingest": {"max_frame_bytes": 10**6}}, "ingest.max_frame_bytes"),
    ({"ingest": {"tcp_prot": 1}}, "ingest.tcp_prot"),
    ({"spol": {}}, "spol"),
])
def test_bad_values_name_the_option(tmp_path, doc, option):
    with pytest.raises(ConfigError) as err:
        from_mapping({**BASE, **doc}, base_dir=tmp_path, env={})
    assert err.value.option == option


def test_bad_env_value_and_bad_device_id(tmp_path):
    with pytest.raises(ConfigError, match="spool.max_bytes"):
        from_mapping(BASE, base_dir=tmp_path, env={"VERITRAIL_SPOOL_MAX_BYTES": "lots"})
    with pytest.raises(ConfigError, match="device_id"):
        from_mapping({"agent": {**BASE["agent"], "device_id": "a b"}}, base_dir=tmp_path, env={})


def test_missing_file_says_run_init(tmp_path):
    with pytest.raises(NotInitialised, match="agent init"):
        load(tmp_path / "nope.toml")


def test_init_writes_the_device_class_the_daemon_loads(tmp_path):
    from agent.daemon import make_engine
    from agent.daemon_cli import init_agent
    from agent.config import load
    paths = init_agent(device_id="tcu-9", directory=tmp_path / "t", device_class="tcu", quiet=True)
    cfg = load(paths.config)
    assert cfg.rules["device_class"] == "tcu"
    engine, _ = make_engine(cfg)
    assert engine.watches("tcu.event.pin_failed")  # the TCU pack, not the charger pack
