"""FakeAgent: a protocol-speaking stand-in for the Veritrail agent, for tests and benches.

It is NOT the agent: no rules engine, no ledger, no spool. It speaks docs/protocol.md
with the real codec (`firmware_shim.framing`), answers `chk` with a verdict chosen by a
`judge` callable, keeps every decoded request in arrival order, and can be made slow
(`reply_delay_ms`), stalled (`pause_reading()`), stopped and restarted on the same address.
With `fsync_dir` set it appends each record to a file and fsyncs it before answering a
`chk` or `sync rec`, to price durability. CPython only.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from firmware_shim.framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameError, decode_body, encode_frame

__all__ = ["FakeAgent", "allow_all"]

Judge = Callable[[dict[str, Any]], tuple[str, list[str]]]


def allow_all(c: dict[str, Any]) -> tuple[str, list[str]]:
    return "allow", []


class FakeAgent:
    def __init__(
        self,
        address: str,
        *,
        judge: Judge = allow_all,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        reply_delay_ms: int = 0,
        fsync_dir: str | None = None,
    ) -> None:
        if not address.startswith("unix:"):
            raise ValueError(f"FakeAgent listens on unix:PATH only, got {address!r}")
        self.address = address
        self.path = address[5:]
        self.judge = judge
        self.max_frame_bytes = max_frame_bytes
        self.reply_delay_ms = reply_delay_ms
        self.fsync_dir = fsync_dir
        self.frames: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.connections = 0
        self.batches = 0  # recb frames received (their records are in frames as rec frames)
        self._lock = threading.Lock()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._seq = 0
        self._log: Any = None

    # -- control -----------------------------------------------------------------------

    def start(self) -> FakeAgent:
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(16)
        listener.setblocking(False)
        if self.fsync_dir is not None:
            self._log = open(os.path.join(self.fsync_dir, "fake-agent.log"), "ab", buffering=0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(listener,), name="fake-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (the socket path disappears)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause_reading(self) -> None:
        self._paused.set()

    def resume_reading(self) -> None:
        self._paused.clear()

    def __enter__(self) -> FakeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------

    def of_type(self, t: str) -> list[dict[str, Any]]:
        with self._lock:
            return [f for f in self.frames if f.get("t") == t]

    def records(self) -> list[dict[str, Any]]:
        return [f["r"] for f in self.of_type("rec")]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return predicate()

    # -- server loop -------------------------------------------------------------------

    def _serve(self, listener: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        conns: dict[socket.socket, FrameDecoder] = {}
        delayed: list[tuple[float, socket.socket, bytes]] = []
        try:
            while not self._stop.is_set():
                timeout = 0.01
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(True)
                        conns[conn] = FrameDecoder(self.max_frame_bytes)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                        self.connections += 1
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    if self._paused.is_set():
                        continue
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(conn)
                        conns.pop(conn, None)
                        conn.close()
                        continue
                    for item in conns[conn].feed(data):
                        reply = self._handle(item)
                        if reply is None:
                            continue
                        if self.reply_delay_ms:
                            delayed.append((time.monotonic() + self.reply_delay_ms / 1000, conn, reply))
                        else:
                            self._send(conn, reply)
                if self._paused.is_set():
                    time.sleep(0.005)  # nothing to do but wait for resume or stop
                now = time.monotonic()
                due = [d for d in delayed if d[0] <= now]
                delayed = [d for d in delayed if d[0] > now]
                for _, conn, reply in due:
                    if conn in conns:
                        self._send(conn, reply)
        finally:
            for conn in conns:
                conn.close()
            sel.close()
            listener.close()
            if os.path.exists(self.path):
                os.unlink(self.path)

    def _send(self, conn: socket.socket, reply: bytes) -> None:
        try:
            conn.sendall(reply)
        except OSError as exc:
            self.errors.append(f"send failed: {type(exc).__name__}")

    def _durable(self, frame: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(encode_frame(frame))
            os.fsync(self._log.fileno())

    def _recb(self, item: dict[str, Any]) -> bytes | None:
        bins = item.get("b")
        if not isinstance(bins, list):
            return encode_frame({"t": "err", "id": None, "code": "invalid", "msg": "recb needs a list b"})
        self.batches += 1
        problems = []
        for i, body in enumerate(bins):
            try:
                r = decode_body(body) if isinstance(body, bytes) else None
            except ValueError:
                r = None
            if r is None:
                problems.append(i)
                continue
            frame = {"t": "rec", "r": r}
            with self._lock:
                self.frames.append(frame)
            self._seq += 1
            if self._log is not None:
                self._log.write(encode_frame(frame))
        if problems:
            return encode_frame({"t": "err", "id": None, "code": "invalid", "msg": f"recb items {problems}"})
        return None

    def _handle(self, item: dict[str, Any] | FrameError) -> bytes | None:
        if isinstance(item, FrameError):
            self.errors.append(item.code)
            return encode_frame({"t": "err", "id": None, "code": item.code, "msg": item.detail})
        t = item.get("t")
        if t == "recb":  # a record batch: kept as the rec frames it stands for
            return self._recb(item)
        with self._lock:
            self.frames.append(item)
        if t == "rec":
            self._seq += 1
            if self._log is not None and not item.get("sync"):
                self._log.write(encode_frame(item))
            if item.get("sync") and item.get("id") is not None:
                self._durable(item)
                return encode_frame({"t": "ok", "id": item["id"], "seq": self._seq})
            return None
        if t == "chk":
            self._seq += 1
            self._durable(item)
            verdict, rules = self.judge(item.get("c") or {})
            return encode_frame({"t": "verdict", "id": item.get("id"), "v": verdict, "r": rules, "seq": self._seq, "rb": 0})
        if t == "hello":
            return encode_frame({"t": "ok", "id": None, "seq": self._seq})
        if t == "ping":
            return encode_frame({"t": "pong", "id": item.get("id")})
        if t in ("upd", "drop"):
            return None
        return encode_frame({"t": "err", "id": item.get("id"), "code": "unknown_type", "msg": "unknown t"})
