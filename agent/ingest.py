"""Ingest: the local frame protocol (docs/protocol.md), agent side, on a Unix socket and TCP.

Each connection is an ``asyncio.Protocol``: every chunk the kernel hands over is decoded
at once (all complete frames in it) and each frame is handled right there, so a burst of
records costs one loop iteration, not one per frame. Replies that wait for durability
(``chk`` verdicts, ``sync`` records) are registered with the ledger and written, in
request order, once their checkpoint is committed.

Bounds and policies:
- frame size: ``max_frame_bytes`` (err/too_large, body skipped; > 16 MiB closes the stream);
- per connection: ``max_pending_replies`` durable replies outstanding, beyond it err/busy;
- a client that does not read its replies: writing pauses, so we stop reading it;
- all connections: when the ledger's backlog of uncommitted records is above
  ``backlog_records``, reading stops everywhere until the backlog halves (backpressure);
- ``max_connections``: more are answered err/busy and closed.
Every refusal is counted by reason (``frames.*``, ``conn.*``) in the agent's counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

from .config import IngestConfig
from .core.errors import RecordInvalid
from .frames import (AGENT_SET, STREAM_LIMIT_BYTES, FrameError, FrameReader, check, clean, encode_frame, sanitize,
                     split_recb)
from .ledger import Ledger

log = logging.getLogger("veritrail.ingest")

SHIM_DROP = "agent.shim_drop"
TWIN_ALERT = "twin.update"
_MAX_REASON = 32
__all__ = ["Connection", "IngestServer", "FrameReader", "FrameError", "encode_frame", "STREAM_LIMIT_BYTES"]


def _err(id_: Any, code: str, msg: str) -> bytes:
    return encode_frame({"t": "err", "id": id_ if type(id_) is int else None, "code": code, "msg": msg})


def _uint(value: Any) -> TypeGuard[int]:
    return type(value) is int and value >= 0


_READ_BYTES = 64 * 1024  # per read: bounds the frames decoded at once (RSS) while batching well


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: "IngestServer", local: bool) -> None:
        self.server = server
        self.local = local
        self.ledger = server.ledger
        self.counters = server.counters
        self.decoder = FrameReader(server.config.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.pending = 0          # durable replies not yet written
        self.last_wait = -1       # seq the newest pending reply waits for
        self.write_paused = False
        self.closed = False
        self._rbuf = bytearray(_READ_BYTES)
        self._view = memoryview(self._rbuf)

    # --- transport callbacks --------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rbuf[:nbytes])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.server.config.max_connections:
            self.counters["conn.refused_limit"] += 1
            transport.write(_err(None, "busy", "too many connections"))  # type: ignore[attr-defined]
            transport.close()
            self.closed = True
            return
        self.server.connections.add(self)
        if self.server.paused:
            transport.pause_reading()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.pending:
            self.counters["conn.lost_with_pending_replies"] += 1

    def pause_writing(self) -> None:
        self.write_paused = True
        self.counters["conn.slow_reader"] += 1
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.server.paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes | bytearray) -> None:
        items = self.decoder.feed(data)
        ledger = self.ledger
        ledger.begin_input()  # the flush below serves every urgent() of this read
        try:
            self._handle(items)
        finally:
            ledger.flush()
        if ledger.congested:
            self.server.pause_all()

    def _handle(self, items: list[Any]) -> None:
        batch: list[dict[str, Any]] = []  # consecutive plain records: appended in one go
        is_clean, add = clean, batch.append
        for obj in items:
            if type(obj) is dict:
                t = obj.get("t")
                if t == "rec" and not obj.get("sync"):
                    r = obj.get("r")
                    if type(r) is dict and is_clean(r):  # hot path
                        r["kind"] = "api"
                        add(r)
                        continue
                    fields = self._fields(obj)
                    if fields is not None:
                        add(fields)
                    continue
                if batch:
                    self._append_batch(batch)
                    batch = []
                    add = batch.append  # (was missing: later records went to the old list, unsealed)
                if t == "recb":
                    self._recb(obj)
                elif t == "rec":
                    self._rec_sync(obj)
                elif t == "chk":
                    self._chk(obj)
                elif t == "upd":
                    self._upd(obj)
                elif t == "drop":
                    self._drop(obj)
                elif t == "hello":
                    self._reply(encode_frame({"t": "ok", "id": obj.get("id") if _uint(obj.get("id")) else None}))
                elif t == "ping":
                    self._reply(encode_frame({"t": "pong", "id": obj.get("id")}))
                elif t == "status" and self.local:
                    self._reply(encode_frame({"t": "status", "id": obj.get("id"), "s": self.server.status()}))
                else:
                    self.counters["frames.unknown_type"] += 1
                    self._reply(_err(obj.get("id"), "unknown_type", "unknown frame type"))
            else:
                if batch:
                    self._append_batch(batch)
                    batch = []
                    add = batch.append
                self._frame_error(obj)
        if batch:
            self._append_batch(batch)

    def _append_batch(self, batch: list[dict[str, Any]]) -> None:
        for exc in self.ledger.append_batch(batch):
            self.counters["frames.invalid"] += 1
            self._reply(_err(None, "invalid", f"record not encodable: {exc.reason}"[:80]))
        watches = getattr(self.server.engine, "watches", None)
        if watches is not None:
            self._observe(batch, watches)

    def _recb(self, obj: dict) -> None:
        """A record batch: each item one record's fields, packed by the sender. Items are
        checked one by one (as ``rec``); a bad one gets err/invalid naming its index and the
        others are kept. Unchanged items are sealed with the sender's bytes (no re-packing)."""
        bins, limit = obj.get("b"), self.server.config.max_batch_records
        if type(bins) is not list or not bins:
            return self._invalid(obj, "recb needs a non-empty list b")
        if len(bins) > limit:
            self.counters["frames.recb_over_limit"] += 1
            self.counters["frames.recb_over_limit_records"] += len(bins)
            return self._invalid(obj, f"recb carries {len(bins)} records, limit {limit}")
        bodies, kinds, batch, problems = split_recb(bins)
        for i, msg in problems:
            self._invalid(obj, f"recb item {i}: {msg}"[:80])
        if not bodies:
            return
        for exc in self.ledger.append_raw_batch(bodies, kinds):
            self.counters["frames.invalid"] += 1
            self._reply(_err(None, "invalid", f"record not encodable: {exc.reason}"[:80]))
        watches = getattr(self.server.engine, "watches", None)
        if watches is not None:
            self._observe(batch, watches)

    def _observe(self, batch: list[dict[str, Any]], watches: Any) -> None:
        """Show the rules the api records they watch (security events, PIN failures, local
        logins...). A record that carries a verdict (``x.v``) was already judged as a remote
        command through ``chk`` (e.g. the OCPP guard's record of the call) and is skipped, so
        windows are not counted twice. Observation may alert, never block."""
        if not any(type(api) is str and watches(api) for api in {r.get("api") for r in batch}):
            return  # the usual case, asked once per api name instead of once per record
        engine, wall = self.server.engine, self.ledger.wall
        for r in batch:
            api = r.get("api")
            if type(api) is not str or r.get("kind", "api") != "api" or not watches(api):
                continue
            x = r.get("x")
            if type(x) is dict:
                if "v" in x:
                    continue
                args = x.get("args")
                args = args if type(args) is dict else x
            else:
                args = {}
            src, sub = r.get("src"), r.get("sub")
            try:
                j = engine.observe({"cmd": api, "args": args, "src": src if type(src) is dict else {},
                                    "sub": sub}, wall)
            except Exception as exc:  # noqa: BLE001 - counted; the record itself is kept
                self.counters["observe.error"] += 1
                log.error("rules engine failed observing %s: %s", api, type(exc).__name__)
                continue
            self.counters["observe.events"] += 1
            if j.alerts:
                self._alerts(j.alerts, api, src if type(src) is dict else None,
                             sub if type(sub) is str else None, None)

    # --- frames ---------------------------------------------------------------------
    def _frame_error(self, fe: FrameError) -> None:
        self.counters["frames." + fe.code] += 1
        if fe.fatal:
            log.warning("closing a connection: frame length %d over the stream limit", fe.size)
            if self.transport is not None:
                self.transport.write(_err(None, "too_large", "frame over the stream limit; closing"))
                self.transport.close()
            return
        code = "too_large" if fe.code == FrameError.TOO_LARGE else "malformed"
        self._reply(_err(None, code, fe.detail[:80]))

    def _invalid(self, obj: dict, msg: str) -> None:
        self.counters["frames.invalid"] += 1
        self._reply(_err(obj.get("id"), "invalid", msg))

    def _fields(self, obj: dict) -> dict[str, Any] | None:
        """The record fields of a rec frame, checked (DESIGN §2); None after an err reply."""
        r = obj.get("r")
        if type(r) is not dict:
            self._invalid(obj, "rec needs a map r")
            return None
        if not AGENT_SET.isdisjoint(r):
            r = sanitize(r)
        if "kind" not in r:
            r["kind"] = "api"
        bad = check(r)
        if bad is not None:
            self._invalid(obj, bad)
            return None
        return r

    def _rec_sync(self, obj: dict) -> None:
        fields = self._fields(obj)
        if fields is None:
            return
        id_ = obj.get("id")
        if not _uint(id_):
            return self._invalid(obj, "sync rec needs a uint id")
        if self.pending >= self.server.config.max_pending_replies:
            self.counters["frames.busy"] += 1
            return self._reply(_err(id_, "busy", "too many replies outstanding"))
        try:
            seq = self.ledger.append(fields)
        except RecordInvalid as exc:
            return self._invalid(obj, f"record not encodable: {exc.reason}")
        if seq < 0:
            self.counters["frames.busy"] += 1
            return self._reply(_err(id_, "busy", "spool full: api record dropped (counted)"))
        self._after_durable(seq, {"t": "ok", "id": id_, "seq": seq})

    def _chk(self, obj: dict) -> None:
        id_, c = obj.get("id"), obj.get("c")
        if not _uint(id_):
            return self._invalid(obj, "chk needs a uint id")
        if type(c) is not dict or not isinstance(c.get("cmd"), str) or not c["cmd"]:
            return self._invalid(obj, "chk needs c.cmd (str)")
        args, src, sub = c.get("args", {}), c.get("src", {}), c.get("sub")
        if not isinstance(args, dict) or not isinstance(src, dict) or not (sub is None or isinstance(sub, str)):
            return self._invalid(obj, "c.args and c.src must be maps, c.sub a string")
        if self.pending >= self.server.config.max_pending_replies:
            self.counters["frames.busy"] += 1
            return self._reply(_err(id_, "busy", "too many replies outstanding"))
        ledger = self.ledger
        command = {"cmd": c["cmd"], "args": args, "src": src, "sub": sub}
        try:
            j = self.server.engine.judge(command, ledger.wall)
            verdict, rule_ids, bundle, alerts, why = j.verdict, list(j.rule_ids), j.bundle_version, j.alerts, j.why
        except Exception as exc:  # noqa: BLE001 - a rules bug must not lose the command record
            self.counters["judge.error"] += 1
            log.error("rules engine failed on %s: %s", c["cmd"], type(exc).__name__)
            verdict, rule_ids, bundle, alerts, why = "defer", [], -1, [], "rules engine error"
        fields: dict[str, Any] = {"kind": "cmd", "api": c["cmd"], "src": src}
        if sub is not None:
            fields["sub"] = sub
        fields.update({"x": {"args": args}, "v": verdict, "r": rule_ids, "rb": bundle})
        try:
            seq = ledger.append_security(fields)
        except RecordInvalid as exc:
            return self._invalid(obj, f"command not recordable: {exc.reason}")
        self._alerts(alerts, c["cmd"], src, sub, seq)
        reply = {"t": "verdict", "id": id_, "v": verdict, "r": rule_ids, "seq": seq, "rb": bundle}
        if why:
            reply["why"] = str(why)[:200]
        self._after_durable(ledger.sealer.next_seq - 1, reply)

    def _alerts(self, alerts: list, api: str, src: dict | None, sub: str | None, cmd_seq: int | None) -> None:
        for a in alerts:
            x: dict[str, Any] = {"rule": a.rule_id, "sev": a.severity}
            if cmd_seq is not None:
                x["cmd_seq"] = cmd_seq
            fields: dict[str, Any] = {"kind": "alert", "api": api}
            if src is not None:
                fields["src"] = src
            if sub is not None:
                fields["sub"] = sub
            fields["x"] = x
            self.ledger.append_security(fields)

    def _upd(self, obj: dict) -> None:
        s, ts = obj.get("s"), obj.get("ts")
        if type(s) is not dict:
            return self._invalid(obj, "upd needs a map s")
        now = ts if _uint(ts) else self.ledger.wall
        try:
            alerts = self.server.engine.update_twin(s, now)
        except Exception as exc:  # noqa: BLE001 - counted; the twin keeps its last state
            self.counters["twin.error"] += 1
            log.error("twin update failed: %s", type(exc).__name__)
            return
        if alerts:
            self._alerts(alerts, TWIN_ALERT, None, None, None)

    def _drop(self, obj: dict) -> None:
        n, reason = obj.get("n"), obj.get("reason")
        if not _uint(n) or not isinstance(reason, str):
            return self._invalid(obj, "drop needs uint n and str reason")
        if not reason or len(reason) > _MAX_REASON or not all(ch.isalnum() or ch in "_-." for ch in reason):
            reason = "other"
        self.counters["drop.shim." + reason] += n
        self.ledger.append_security({"kind": "agent", "api": SHIM_DROP, "x": {"n": n, "reason": reason}})

    # --- replies --------------------------------------------------------------------
    def _after_durable(self, seq: int, reply: dict) -> None:
        self.pending += 1
        self.last_wait = seq
        frame = encode_frame(reply)

        def send() -> None:
            self.pending -= 1
            if not self.closed and self.transport is not None:
                self.transport.write(frame)

        self.ledger.urgent()
        self.ledger.when_durable(seq, send)

    def _reply(self, frame: bytes) -> None:
        """An immediate reply, kept behind this connection's pending durable replies."""
        if not self.pending:
            return self._write(frame)
        self.pending += 1

        def send() -> None:
            self.pending -= 1
            self._write(frame)

        self.ledger.when_durable(self.last_wait, send)

    def _write(self, frame: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(frame)


class IngestServer:
    def __init__(self, config: IngestConfig, ledger: Ledger, engine: Any, *, socket_path: Path,
                 status: Callable[[], dict], counters: Counter[str]) -> None:
        self.config = config
        self.ledger = ledger
        self.engine = engine
        self.socket_path = Path(socket_path)
        self.status = status
        self.counters = counters
        self.connections: set[Connection] = set()
        self.paused = False
        self._servers: list[asyncio.AbstractServer] = []
        ledger.on_relief.append(self.resume_all)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        path = self.socket_path
        if path.exists() or path.is_symlink():
            path.unlink()  # stale socket from a crash (a live daemon holds the spool lock)
        self._servers.append(await loop.create_unix_server(lambda: Connection(self, True), str(path)))
        os.chmod(path, 0o660)
        if self.config.tcp_port:
            self._servers.append(await loop.create_server(
                lambda: Connection(self, False), self.config.tcp_host, self.config.tcp_port))
        log.info("ingest listening on %s%s", path,
                 f" and tcp {self.config.tcp_host}:{self.config.tcp_port}" if self.config.tcp_port else "")

    def pause_all(self) -> None:
        if not self.paused:
            self.paused = True
            self.counters["ingest.backpressure"] += 1
            for conn in self.connections:
                if conn.transport is not None:
                    conn.transport.pause_reading()

    def resume_all(self) -> None:
        if self.paused:
            self.paused = False
            for conn in self.connections:
                if conn.transport is not None and not conn.write_paused:
                    conn.transport.resume_reading()

    def stop_listening(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()

    def close_connections(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
