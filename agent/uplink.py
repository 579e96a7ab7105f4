"""The uplink: spool → batches → MQTT v5 → collector; receipts → spool deletions (DESIGN §5).

paho-mqtt runs its own network thread (``loop_start``); its callbacks only hand events to
the asyncio loop with ``call_soon_threadsafe``. A process hosting many uplinks (the
simulator's fleets) passes ``network=LoopNetwork()`` (``uplink_loop.py``) to drive the
client from the asyncio loop instead: no thread, no ``select()`` descriptor limit. The spool is touched from the loop thread
only. Delivery is at-least-once end to end: a batch stays in the spool until a receipt
signed by the collector's key (checked here) names a checkpoint whose hash is ours; after
a reconnect, or when no receipt comes within ``receipt_timeout_s``, everything after the
last receipt is sent again. The collector is idempotent, so storage is exactly-once.

Queue sizes on purpose: at most ``max_inflight_batches`` batches are published and not
yet receipted (each ≤ ``max_batch_bytes``); paho's own queue is capped to the same, so a
long outage costs no RAM here: the backlog stays in the spool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .core import batch
from .core.checkpoint import parse as parse_checkpoint
from .core.errors import BadSignature, CheckpointMalformed, CoseMalformed
from .core.keys import ALGS, PublicKey
from .core.receipt import WireMessageMalformed, open_control, open_receipt
from .errors import ConfigError, ReceiptMismatch, SpoolError

log = logging.getLogger("veritrail.uplink")
URGENT = frozenset({"security", "start", "stop", "rotate"})  # sent without lingering
_TOPIC_OVERHEAD = 16  # fixed header, topic length, packet id, properties length


@dataclass(frozen=True, kw_only=True, slots=True)
class UplinkConfig:
    """The ``[uplink]`` table of the agent's config."""

    collector_public_key: str                 # hex; receipts and control messages must verify with it
    collector_key_alg: str = "Ed25519"
    host: str = "127.0.0.1"
    port: int = 1883
    tls_ca_file: str | None = None            # set: TLS; with cert/key: client certificate (production)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86_400        # DESIGN §5: >= 1 day
    max_inflight_batches: int = 4
    max_batch_bytes: int = 256 * 1024         # also capped by the broker's advertised maximum packet size
    batch_linger_ms: int = 30_000             # wait this long to fill a batch; security/start/stop checkpoints
                                              # go at once. Bigger batches compress far better (docs/benchmarks.md)
    receipt_timeout_s: float = 30.0           # no receipt progress for this long: resend after the last receipt
                                              # (doubling per timeout up to 10 min, so a slow collector is not flooded)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0             # backoff: uniform(min, min(max, min * 2**attempt))
    codec: str = "auto"                       # auto (zstd if installed, else zlib), zstd, zlib, none
    status_interval_s: float = 60.0
    topic_prefix: str = "vt/v1/dev"

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> ConfigError:
            return ConfigError(f"uplink.{name}", getattr(self, name), reason)
        if self.collector_key_alg not in ALGS:
            raise bad("collector_key_alg", f"must be one of {ALGS}")
        try:
            PublicKey(self.collector_key_alg, bytes.fromhex(self.collector_public_key))
        except (ValueError, TypeError):
            raise bad("collector_public_key", "not a hex public key for collector_key_alg") from None
        if not 0 < self.port < 65536:
            raise bad("port", "must be 1..65535")
        if self.session_expiry_s < 86_400:
            raise bad("session_expiry_s", "must be at least one day (86400)")
        if not 1 <= self.max_inflight_batches <= 100:
            raise bad("max_inflight_batches", "must be 1..100")
        if not 1024 <= self.max_batch_bytes <= batch.MAX_PAYLOAD_BYTES:
            raise bad("max_batch_bytes", f"must be 1024..{batch.MAX_PAYLOAD_BYTES}")
        if self.batch_linger_ms < 0 or self.receipt_timeout_s <= 0 or self.keepalive_s < 5:
            raise bad("batch_linger_ms", "linger >= 0, receipt_timeout_s > 0 and keepalive_s >= 5 required")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise bad("reconnect_min_s", "need 0 < reconnect_min_s <= reconnect_max_s")
        if self.codec != "auto" and self.codec not in batch.available_codecs():
            raise bad("codec", f"must be auto or one of {batch.available_codecs()}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise bad("tls_cert_file", "tls_cert_file and tls_key_file go together")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "UplinkConfig":
        known = {f.name for f in fields(cls)}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"uplink.{key}", value, "unknown option")
        if "collector_public_key" not in table:
            raise ConfigError("uplink.collector_public_key", None, "required (from `veritrail collector init`)")
        return cls(**table)

    def codec_byte(self) -> int:
        return batch.default_codec() if self.codec == "auto" else batch.CODEC_NAMES[self.codec]


@dataclass(slots=True)
class _Sent:
    last_cp: int
    sent_at: float


class Uplink:
    def __init__(self, config: UplinkConfig, spool: Any, device_id: str, *,
                 on_control: Callable[[str, bytes], None], status: Callable[[], dict],
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 network: Any = None) -> None:
        self.config, self.spool, self.device_id = config, spool, device_id
        self.on_control, self.status, self.clock = on_control, status, clock
        self._rng = rng or random.Random()
        self._key = PublicKey(config.collector_key_alg, bytes.fromhex(config.collector_public_key))
        t = f"{config.topic_prefix}/{device_id}"
        self.topics = {k: f"{t}/{k}" for k in ("up", "rcpt", "ctl", "status")}
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._inflight: list[_Sent] = []
        self._cursor: int | None = None       # last cp published in this session
        self._connected = False
        self._limit = config.max_batch_bytes
        self._linger_since: float | None = None
        self._progress_at = clock()
        self._receipt_timeout = config.receipt_timeout_s  # doubles after each timeout (cap 10 min), reset by a receipt
        self._next_status = 0.0
        self._damaged_seen: set[int] = set()
        self._ctl_seen: set[int] = set()
        self._attempt = 0
        self._reconnect_delay = config.reconnect_min_s
        self._network = network               # None: paho's own thread; else e.g. uplink_loop.LoopNetwork
        self._last_error: str | None = None
        self._last_receipt: tuple[int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self.client: mqtt.Client | None = None

    # --- public, thread-safe --------------------------------------------------------
    def notify(self) -> None:
        """A checkpoint was committed (may be called from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def stop(self) -> None:
        self._stopping = True
        self.notify()

    def state(self) -> dict[str, Any]:
        return {"connected": self._connected, "inflight": len(self._inflight), "last_error": self._last_error,
                "reconnects": self.counts["reconnects"], "drops": dict(self.drops), "counts": dict(self.counts),
                "max_batch_bytes": self._limit, "cursor_cp": self._cursor,
                "last_receipt": None if self._last_receipt is None else
                {"cp": self._last_receipt[0], "upto_seq": self._last_receipt[1]}}

    # --- paho side (network thread): hand everything to the loop ----------------------
    def _call(self, fn: Callable, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _backoff(self) -> None:
        cfg = self.config
        delay = self._rng.uniform(cfg.reconnect_min_s, min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(self._attempt, 30)))
        self._attempt += 1
        self._reconnect_delay = delay
        if self.client is not None:
            # paho waits exactly this before its next attempt (its stubs say int; it takes seconds as float)
            self.client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._call(self._note_error, f"connect refused: {reason_code}")
            self._backoff()
            return
        self._attempt = 0
        mps = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self._call(self._connected_cb, bool(flags.session_present), mps)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._backoff()
        self._call(self._disconnected_cb, str(reason_code))

    def _on_connect_fail(self, client, userdata) -> None:
        self._backoff()
        self._call(self._note_error, "connect failed")

    def _on_message(self, client, userdata, msg) -> None:
        self._call(self._message_cb, msg.topic, bytes(msg.payload))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._call(self._puback_failed, str(reason_code))

    # --- loop side ------------------------------------------------------------------
    def _note_error(self, text: str) -> None:
        self._last_error = text
        self.counts["connect_failures"] += 1

    def _connected_cb(self, session_present: bool, max_packet: int | None) -> None:
        assert self.client is not None
        self._connected = True
        self.counts["connects"] += 1
        self._limit = self.config.max_batch_bytes
        if max_packet:
            self._limit = min(self._limit, int(max_packet) - _TOPIC_OVERHEAD - len(self.topics["up"]))
        self._restart_from_receipt()
        self.client.subscribe([(self.topics["rcpt"], 1), (self.topics["ctl"], 1)])
        self._publish_status("online")
        log.info("uplink connected (session present: %s, batch limit %d bytes)", session_present, self._limit)
        self._wake_up()

    def _disconnected_cb(self, reason: str) -> None:
        if self._connected:
            self.counts["reconnects"] += 1
        self._connected = False
        self._last_error = f"disconnected: {reason}"
        self._inflight.clear()

    def _puback_failed(self, reason: str) -> None:
        self.drops[f"puback:{reason}"[:48]] += 1
        self._last_error = f"publish refused: {reason}"

    def _restart_from_receipt(self) -> None:
        """Resend everything after the last receipt (from the oldest unacknowledged block)."""
        self._cursor = None
        self._inflight.clear()
        self._linger_since = None
        self._progress_at = self.clock()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _message_cb(self, topic: str, payload: bytes) -> None:
        if topic == self.topics["rcpt"]:
            self._receipt(payload)
        elif topic == self.topics["ctl"]:
            self._control(payload)
        else:
            self.drops["unexpected_topic"] += 1

    def _receipt(self, payload: bytes) -> None:
        try:
            r = open_receipt(payload, self._key, self.device_id)
        except (BadSignature, CoseMalformed, WireMessageMalformed) as exc:
            reason = "bad_signature" if isinstance(exc, BadSignature) else "malformed"
            self.drops[f"receipt_refused:{reason}"] += 1
            log.warning("receipt refused: %s", reason)
            return
        try:
            deleted = self.spool.apply_receipt(r.upto, r.cp, r.cp_hash)
        except ReceiptMismatch as exc:
            self.drops["receipt_refused:mismatch"] += 1
            log.warning("receipt for checkpoint %d refused by the spool: %s", r.cp, exc.reason)
            return
        except SpoolError as exc:
            self._last_error = f"spool: {exc.reason}"
            return
        self.counts["receipts_applied"] += 1
        self.counts["records_receipted"] += deleted
        self._last_receipt = (r.cp, r.upto)
        self._inflight = [s for s in self._inflight if s.last_cp > r.cp]
        self._progress_at = self.clock()
        self._receipt_timeout = self.config.receipt_timeout_s
        self._wake_up()

    def _control(self, payload: bytes) -> None:
        try:
            c = open_control(payload, self._key, self.device_id)
        except (BadSignature, CoseMalformed, WireMessageMalformed) as exc:
            self.drops["control_refused:" + ("bad_signature" if isinstance(exc, BadSignature) else "malformed")] += 1
            return
        if c.id in self._ctl_seen:
            self.counts["control_repeated"] += 1
            return
        self._ctl_seen.add(c.id)
        self.counts["control_delivered"] += 1
        if c.kind == "resend":
            self._restart_from_receipt()
            self._wake_up()
            return
        self.on_control(c.kind, c.body)

    def _publish_status(self, state: str) -> Any:
        assert self.client is not None
        doc: dict[str, Any] = {"state": state, "wall_ms": int(time.time() * 1000)}
        try:
            s = self.status()
        except Exception as exc:  # noqa: BLE001 - the daemon's status callable is foreign code; status is best effort
            s = {}
            self.drops["status_unavailable"] += 1
            log.warning("status unavailable: %s", type(exc).__name__)
        for key in ("version", "boot", "seq", "next_seq", "uptime_s"):
            if key in s:
                doc[key] = s[key]
        spool = s.get("spool")
        if isinstance(spool, dict):
            doc["spool"] = {k: spool.get(k) for k in ("bytes", "max_bytes", "blocks", "records") if k in spool}
        doc["uplink"] = {"reconnects": self.counts["reconnects"], "drops": sum(self.drops.values())}
        self._next_status = self.clock() + self.config.status_interval_s
        return self.client.publish(self.topics["status"], json.dumps(doc, default=str).encode(), qos=1, retain=True)

    # --- sending --------------------------------------------------------------------
    def _urgent(self, message: bytes) -> bool:
        try:
            return parse_checkpoint(message).why in URGENT
        except CheckpointMalformed:
            return True

    def _encode(self, cps: list) -> tuple[bytes, int]:
        """The largest prefix of ``cps`` whose batch fits the limit: (payload, count); count 0 = first is oversize."""
        n = len(cps)
        codec = self.config.codec_byte()
        while n >= 1:
            try:
                payload = batch.encode(self.device_id, [(c.message, c.records) for c in cps[:n]], codec=codec)
            except batch.BatchTooLarge:
                payload = None
            if payload is not None and len(payload) <= self._limit:
                return payload, n
            n //= 2
        return b"", 0

    async def _pump(self) -> float:
        """Publish what may be published now; returns seconds until we should look again."""
        cfg = self.config
        now = self.clock()
        if not self._connected:
            return 1.0
        if now >= self._next_status:
            self._publish_status("online")
        if self._inflight and now - self._progress_at > self._receipt_timeout:
            self.counts["resend_timeouts"] += 1
            log.info("no receipt for %.0f s: resending after the last receipt", now - self._progress_at)
            self._receipt_timeout = min(2 * self._receipt_timeout, max(600.0, cfg.receipt_timeout_s))
            self._restart_from_receipt()
        while self._connected and len(self._inflight) < cfg.max_inflight_batches and not self._stopping:
            try:
                cps = self.spool.unacked(self._cursor, 4 * self._limit)
            except SpoolError as exc:
                self._last_error = f"spool: {exc.reason}"
                return 1.0
            if not cps:
                self._linger_since = None
                break
            good = [c for c in cps if not c.damaged]
            for c in cps:
                if c.damaged and c.cp not in self._damaged_seen:
                    self._damaged_seen.add(c.cp)
                    self.drops["damaged_block"] += 1
            if not good:
                self._cursor = cps[-1].cp
                continue
            raw = sum(len(c.message) + sum(map(len, c.records)) for c in good)
            backlog = self._cursor is None or len(cps) > 1 and raw >= self._limit
            if not (backlog or raw >= self._limit // 2 or any(self._urgent(c.message) for c in good)):
                if self._linger_since is None:
                    self._linger_since = now
                wait = self._linger_since + cfg.batch_linger_ms / 1000 - now
                if wait > 0:
                    return min(wait, self._timeout(now))
            payload, n = await asyncio.to_thread(self._encode, good)
            if n == 0:
                self.drops["oversize_checkpoint"] += 1
                log.error("checkpoint %d does not fit in %d bytes even alone: skipped (the collector will see a gap)",
                          good[0].cp, self._limit)
                self._cursor = good[0].cp
                continue
            sent = good[:n]
            assert self.client is not None
            info = self.client.publish(self.topics["up"], payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self.drops["paho_queue_full"] += 1
                break
            self._cursor = sent[-1].cp
            if not self._inflight:
                self._progress_at = now
            self._inflight.append(_Sent(sent[-1].cp, now))
            self._linger_since = None
            self.counts["batches_sent"] += 1
            self.counts["bytes_sent"] += len(payload)
            self.counts["checkpoints_sent"] += len(sent)
            self.counts["records_sent"] += sum(len(c.records) for c in sent)
        return self._timeout(now)

    def _timeout(self, now: float) -> float:
        t = max(0.05, self._next_status - now)
        if self._inflight:
            t = min(t, max(0.05, self._progress_at + self._receipt_timeout - now))
        return t

    # --- lifecycle ------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls_ca_file:
            try:
                c.tls_set(ca_certs=cfg.tls_ca_file, certfile=cfg.tls_cert_file, keyfile=cfg.tls_key_file,
                          cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError("uplink.tls_ca_file", cfg.tls_ca_file, f"TLS set-up failed: {exc}") from None
        c.max_inflight_messages_set(cfg.max_inflight_batches)
        c.max_queued_messages_set(cfg.max_inflight_batches + 4)  # batches + status; the spool holds the rest
        c.will_set(self.topics["status"], json.dumps({"state": "offline", "reason": "lost"}).encode(), qos=1, retain=True)
        c.on_connect, c.on_disconnect, c.on_connect_fail = self._on_connect, self._on_disconnect, self._on_connect_fail
        c.on_message, c.on_publish = self._on_message, self._on_publish
        self.client = c
        self._backoff()
        return c

    async def run(self) -> None:
        """Connect, keep connected, publish, apply receipts; returns after ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        client = self._make_client()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s,
                             clean_start=False, properties=props)
        if self._network is None:
            client.loop_start()
        else:
            self._network.start(client, lambda: self._reconnect_delay)
        try:
            while not self._stopping:
                self._wake.clear()
                timeout = await self._pump()
                if self._stopping:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            info = self._publish_status("offline") if self._connected else None
            if self._network is None:
                await asyncio.to_thread(self._shutdown, info)
            else:
                await self._network.stop(info)
                self._connected = False

    def _shutdown(self, info: Any) -> None:
        assert self.client is not None
        if info is not None:
            try:
                info.wait_for_publish(2.0)
            except (ValueError, RuntimeError):
                pass  # connection gone: the will says offline instead
        self.client.disconnect()
        self.client.loop_stop()
        self._connected = False
