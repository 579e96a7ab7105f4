"""Collector configuration: one TOML file, table ``[collector]``; and the collector's key file."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.keys import ALGS, ED25519, generate_signer, load_signer

from .errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectorConfig:
    store: str = "collector.db"                 # SQLite path (relative to the config file)
    key_file: str = "collector.key"             # the collector's signing key (receipts, control)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    client_id: str = "vt-collector"
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 86_400              # persistent session: batches wait in the broker while we are down
    workers: int = 1                            # > 1: that many processes on the shared subscription
    share_group: str = "vt-collectors"
    max_payload_bytes: int = 256 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_pending_checkpoints: int = 4096         # per device, ahead of a gap; more are dropped (counted)
    max_status_bytes: int = 16 * 1024
    max_clock_skew_s: int = 300
    silent_after_s: int = 180                   # 3 heartbeats (DESIGN §3: one at least every 60 s)
    gap_timeout_s: int = 60
    spool_pressure_ratio: float = 0.8
    queue_size: int = 256                       # messages between the MQTT thread and the verifier; full = the
                                                # MQTT thread waits, so the broker holds the backlog, not our RAM
    housekeeping_interval_s: float = 5.0
    api_host: str = "127.0.0.1"
    api_port: int = 0                           # 0: no HTTP API

    def __post_init__(self) -> None:
        for name in ("mqtt_port", "keepalive_s", "workers", "max_payload_bytes", "max_body_bytes",
                     "max_pending_checkpoints", "queue_size", "silent_after_s", "gap_timeout_s"):
            value = getattr(self, name)
            if type(value) is not int or value < (0 if name == "mqtt_port" else 1):
                raise ConfigError(name, value, "must be a positive integer")
        if self.session_expiry_s < 3600:
            raise ConfigError("session_expiry_s", self.session_expiry_s, "must be >= 3600 (persistent session)")
        if not 0 <= self.api_port <= 65535:
            raise ConfigError("api_port", self.api_port, "must be 0..65535")
        if not 0 < self.spool_pressure_ratio <= 1:
            raise ConfigError("spool_pressure_ratio", self.spool_pressure_ratio, "must be in (0, 1]")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file", self.tls_cert_file, "tls_cert_file and tls_key_file go together")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CollectorConfig":
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("file", str(p), str(exc)) from None
        table: dict[str, Any] = dict(doc.get("collector", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        for key in table:
            if key not in known:
                raise ConfigError(key, table[key], "unknown option")
        for key in ("store", "key_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            if isinstance(table.get(key), str) and not os.path.isabs(table[key]):
                table[key] = str(p.parent / table[key])
        try:
            return cls(**table)
        except TypeError as exc:
            raise ConfigError("file", str(p), str(exc)) from None


def create_key(path: str | os.PathLike, alg: str = ED25519) -> Any:
    if alg not in ALGS:
        raise ConfigError("alg", alg, f"use one of {ALGS}")
    signer = generate_signer(alg)
    doc = {"alg": alg, "priv": signer.private_bytes().hex()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return signer


def load_key(path: str | os.PathLike) -> Any:
    try:
        doc = json.loads(Path(path).read_text())
        return load_signer(doc["alg"], bytes.fromhex(doc["priv"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("key_file", str(path), f"unreadable collector key: {exc}") from None
