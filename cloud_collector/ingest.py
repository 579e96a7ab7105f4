"""MQTT in: receive batches and status, decode with limits, verify, store, publish receipts.

paho's network thread only puts messages on a bounded queue; one verifier thread takes
them, runs decode → verify → store (one transaction) → receipt, and only then acks the
MQTT message (manual ack), so a collector killed mid-way gets the message again from
its persistent session. Any rejection is counted by reason and never stops the loop.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core import batch
from agent.core.receipt import make_receipt

from .config import CollectorConfig
from .errors import Rejected, StoreError
from .store import Alert, Store
from .verify import VerifyLimits, process_batch

log = logging.getLogger("veritrail.collector")
PREFIX = "vt/v1/dev"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


def topic_device(topic: str, leaf: str) -> str | None:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX or parts[4] != leaf or not _DEVICE_ID.match(parts[3]):
        return None
    return parts[3]


class Collector:
    def __init__(self, config: CollectorConfig, store: Store, signer, *, worker: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.store, self.signer, self.worker, self.clock = config, store, signer, worker, clock
        self.limits = VerifyLimits(max_pending_checkpoints=config.max_pending_checkpoints,
                                   max_clock_skew_ms=config.max_clock_skew_s * 1000)
        self._queue: queue.Queue[_Message] = queue.Queue(maxsize=config.queue_size)
        self._known: set[str] = store.device_ids()
        self._known_at = 0.0
        self.connected = threading.Event()
        self.client = self._make_client()

    # --- MQTT ---------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        cid = cfg.client_id if cfg.workers == 1 else f"{cfg.client_id}-{self.worker}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls_ca_file:
            c.tls_set(ca_certs=cfg.tls_ca_file, certfile=cfg.tls_cert_file, keyfile=cfg.tls_key_file)
        c.max_inflight_messages_set(20)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("collector connect refused: %s", reason_code)
            return
        up = f"{PREFIX}/+/up"
        if self.config.workers > 1:
            up = f"$share/{self.config.share_group}/{up}"
        subs = [(up, 1)]
        if self.worker == 0:
            subs.append((f"{PREFIX}/+/status", 1))
        client.subscribe(subs)
        self.connected.set()
        log.info("collector worker %d connected (session present: %s)", self.worker, flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.info("collector worker %d disconnected: %s", self.worker, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        self._queue.put(_Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos))  # blocks when full: backpressure

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        self.client.connect_async(self.config.mqtt_host, self.config.mqtt_port, keepalive=self.config.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # --- the verifier loop ---------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.start()
        next_housekeeping = 0.0
        try:
            while not stop.is_set():
                try:
                    msg = self._queue.get(timeout=0.2)
                except queue.Empty:
                    msg = None
                if msg is not None:
                    self.handle(msg)
                if self.worker == 0 and time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + self.config.housekeeping_interval_s
                    self.housekeeping()
        finally:
            self.close()

    def handle(self, msg: _Message) -> None:
        try:
            if msg.topic.endswith("/up"):
                self._handle_batch(msg)
            elif msg.topic.endswith("/status"):
                self._handle_status(msg)
            else:
                raise Rejected("bad_topic")
        except Rejected as rej:
            self._count({f"rejected.{rej.reason}": 1})
            log.info("rejected message on %s: %s", msg.topic[:160], rej.reason)
        except StoreError as exc:
            self._count({"store_errors": 1})
            log.error("store error: %s", exc.reason)
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    def _count(self, counts: dict[str, int]) -> None:
        try:
            with self.store.transaction():
                self.store.bump(counts)
        except StoreError as exc:
            log.error("cannot count %s: %s", sorted(counts), exc.reason)

    def _device(self, topic: str, leaf: str) -> str:
        dev = topic_device(topic, leaf)
        if dev is None:
            raise Rejected("bad_topic")
        if dev not in self._known and self.clock() - self._known_at > 1.0:  # re-read at most once a second
            self._known, self._known_at = self.store.device_ids(), self.clock()
        if dev not in self._known:
            raise Rejected("unknown_device")
        return dev

    def _handle_batch(self, msg: _Message) -> None:
        dev = self._device(msg.topic, "up")
        now = int(self.clock() * 1000)
        self._count({"messages": 1, "bytes_in": len(msg.payload)})
        try:
            items = batch.decode(dev, msg.payload, max_payload_bytes=self.config.max_payload_bytes,
                                 max_body_bytes=self.config.max_body_bytes)
        except batch.BatchError as exc:
            with self.store.transaction():
                self.store.add_alert(Alert(dev, "bad_batch", "warning", exc.code, {"reason": exc.reason}), now)
            raise Rejected(exc.code, exc.reason) from None
        result = process_batch(self.store, dev, items, now, self.limits)
        if result.receipt is not None:
            upto, cp, h = result.receipt
            self.client.publish(f"{PREFIX}/{dev}/rcpt", make_receipt(self.signer, dev, upto, cp, h), qos=1)
            self._count({"receipts_sent": 1})

    def _handle_status(self, msg: _Message) -> None:
        dev = self._device(msg.topic, "status")
        if len(msg.payload) > self.config.max_status_bytes:
            raise Rejected("status_too_large")
        try:
            status = json.loads(msg.payload)
        except (ValueError, UnicodeDecodeError):
            raise Rejected("status_malformed") from None
        if not isinstance(status, dict):
            raise Rejected("status_malformed")
        now = int(self.clock() * 1000)
        with self.store.transaction():
            self.store.touch(dev, now, status)
            self._status_findings(dev, status, now)
            self.store.bump({"status_messages": 1})

    def _status_findings(self, dev: str, status: dict, now: int) -> None:
        wall = status.get("wall_ms")
        if status.get("state") == "online" and type(wall) is int and abs(wall - now) > self.config.max_clock_skew_s * 1000:
            self.store.add_alert(Alert(dev, "clock_skew", "warning", f"boot{status.get('boot')}",
                                       {"device_wall_ms": wall, "collector_ms": now, "skew_ms": wall - now}), now)
        spool = status.get("spool")
        if isinstance(spool, dict):
            used, cap = spool.get("bytes"), spool.get("max_bytes")
            if isinstance(used, int) and isinstance(cap, int) and cap > 0 and used >= cap * self.config.spool_pressure_ratio:
                day = now // 86_400_000
                self.store.add_alert(Alert(dev, "spool_pressure", "warning", str(day),
                                           {"bytes": used, "max_bytes": cap}), now)

    def housekeeping(self) -> None:
        """Silent devices and gaps that stayed open: alerts (one per episode)."""
        now = int(self.clock() * 1000)
        try:
            with self.store.transaction():
                for dev, seen in self.store.silent(now - self.config.silent_after_s * 1000):
                    self.store.add_alert(Alert(dev, "silent", "warning", str(seen),
                                               {"last_seen_ms": seen, "silent_after_s": self.config.silent_after_s}), now)
                for dev, cp, received in self.store.oldest_pending():
                    if received < now - self.config.gap_timeout_s * 1000:
                        row = self.store.load_device(dev)
                        expected = row.state.next_cp if row else None
                        self.store.add_alert(Alert(dev, "gap", "high", f"{expected}",
                                                   {"expected_cp": expected, "lowest_pending_cp": cp,
                                                    "waiting_since_ms": received}, cp=expected), now)
        except StoreError as exc:
            log.error("housekeeping: %s", exc.reason)
