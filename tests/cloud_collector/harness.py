"""A real collector (ingest + SQLite store) in a thread, and an MQTT test client."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.keys import generate_signer
from cloud_collector.config import CollectorConfig
from cloud_collector.ingest import Collector
from cloud_collector.store.sqlite import SQLiteStore
from tests.mqtt_broker import wait_for


class CollectorThread:
    def __init__(self, directory: Path, port: int, *, signer=None, worker: int = 0, **config) -> None:
        self.worker = worker
        self.dir = Path(directory)
        self.signer = signer or generate_signer()
        self.config = CollectorConfig(store=str(self.dir / "collector.db"), mqtt_port=port,
                                      client_id=f"vt-collector-{os.getpid()}", housekeeping_interval_s=0.5, **config)
        self.store = SQLiteStore(self.config.store)  # registry + assertions from the test thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.collector: Collector | None = None

    @property
    def public_hex(self) -> str:
        return self.signer.public_bytes().hex()

    def enroll_spool(self, dev: str, spool) -> None:
        """Enroll the device behind an ``agent.testing.FakeSpool`` (its key and K_0)."""
        from agent.core.export import Trust, enrollment_doc
        s = spool.sealer.signer
        self.store.enroll(Trust.from_enrollment(enrollment_doc(dev, [(s.kid, s.alg, s.public_bytes())], spool.fs_k0)), 0)

    def start(self) -> "CollectorThread":
        self._stop.clear()
        store = SQLiteStore(self.config.store)
        self.collector = Collector(self.config, store, self.signer, worker=self.worker)
        self._thread = threading.Thread(target=self.collector.run, args=(self._stop,), daemon=True)
        self._thread.start()
        wait_for(self.collector.connected.is_set, 10, "collector connected")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.collector is not None:
            self.collector.store.close()
        self._thread = None

    def seqs(self, dev: str) -> list[int]:
        return [s for s, _, _ in self.store.records(dev, 0, 2**62, 10**7)]

    def counters(self) -> dict[str, int]:
        return self.store.counters()


class MqttProbe:
    """A plain MQTT v5 client for publishing attacks and watching topics."""

    def __init__(self, port: int, client_id: str = "test-client", **tls) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.acks: list[tuple[int, str]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls:
            self.c.tls_set(**tls)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload), m.retain))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.append((mid, str(rc)))
        self.subacks: set[int] = set()
        self.disconnects = 0

        def on_disconnect(c, u, f, rc, p) -> None:
            self.disconnects += 1
        self.c.on_disconnect = on_disconnect
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.add(mid)
        self.connected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_for(self.connected.is_set, 10, "test client connected")

    def subscribe(self, topic: str) -> None:
        result, mid = self.c.subscribe(topic, qos=1)
        wait_for(lambda: mid in self.subacks, 10, f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        return info.mid

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
