"""Fakes that share the real interfaces, for fast tests of other parts without a daemon.

- ``AllowAllJudge``: the rules engine interface (judge, update_twin, install_bundle,
  status), allowing everything. The daemon uses it when ``[rules] engine = "allow-all"``.
- ``FakeSpool``: the spool interface the uplink uses (unacked, apply_receipt,
  last_receipt, stats), in memory, fed with real sealed checkpoints by ``FakeSpool.chain``.
- ``AgentHarness``: a real daemon (``agent.daemon.run``) in this process on a temp dir,
  with ``client()`` returning a small synchronous frame client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ingest import FrameReader as FrameDecoder, encode_frame

from .core.chain import ChainState, Sealed, Sealer
from .core.keys import generate_signer
from .errors import ReceiptMismatch
from .spool import SpooledCheckpoint


@dataclass(slots=True)
class FakeAlert:
    rule_id: str
    severity: str
    title: str = ""


@dataclass(slots=True)
class FakeJudgement:
    verdict: str
    rule_ids: tuple[str, ...]
    bundle_version: int
    alerts: list[FakeAlert] = field(default_factory=list)
    why: str | None = None
    refusal: str | None = None


class AllowAllJudge:
    """Rules interface that allows every command; ``script`` maps a command name to a verdict."""

    def __init__(self, script: Mapping[str, tuple[str, list[FakeAlert]]] | None = None) -> None:
        self.script = dict(script or {})
        self.judged: list[dict] = []
        self.twin: dict[str, Any] = {}
        self.bundles: list[bytes] = []
        self.version = 0
        self.load_error: str | None = None

    def judge(self, command: Mapping[str, Any], now_ms: int) -> FakeJudgement:
        self.judged.append(dict(command))
        verdict, alerts = self.script.get(str(command.get("cmd")), ("allow", []))
        rule_ids = tuple(a.rule_id for a in alerts)
        why = alerts[0].title if verdict == "block" and alerts else None
        return FakeJudgement(verdict, rule_ids, self.version, list(alerts), why)

    def update_twin(self, values: Mapping[str, Any], now_ms: int) -> list[FakeAlert]:
        self.twin.update(values)
        return []

    def install_bundle(self, bundle_bytes: bytes, fleet_public_key: Any) -> int:
        self.bundles.append(bytes(bundle_bytes))
        self.version += 1
        return self.version

    def save_state(self, now_ms: int | None = None) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"engine": "allow-all", "bundle_version": self.version, "load_error": self.load_error}


class FakeSpool:
    """In-memory spool with the uplink-facing interface of ``agent.spool.Spool``."""

    def __init__(self, device_id: str = "fake-dev", *, signer: Any = None, fs_k0: bytes | None = None) -> None:
        self.device_id = device_id
        self.fs_k0 = fs_k0 if fs_k0 is not None else os.urandom(32)
        self.sealer = Sealer(ChainState.genesis(device_id, self.fs_k0), signer or generate_signer())
        self.blocks: dict[int, Sealed] = {}
        self.damaged: set[int] = set()
        self._receipt: tuple[int, int] | None = None
        self.receipts_refused = 0

    def chain(self, n_records: int, *, per_checkpoint: int = 4, kind: str = "api") -> list[Sealed]:
        """Append and seal ``n_records`` synthetic records (real chain, real signatures)."""
        out = []
        for i in range(n_records):
            self.sealer.append({"kind": kind, "api": "test.op", "x": {"i": i}}, 1, 2)
            if self.sealer.pending >= per_checkpoint:
                out.append(self._keep(self.sealer.seal(mono=1, wall=2, reason="size")))
        if self.sealer.pending:
            out.append(self._keep(self.sealer.seal(mono=1, wall=2, reason="flush")))
        return out

    def _keep(self, sealed: Sealed) -> Sealed:
        self.blocks[sealed.cp] = sealed
        return sealed

    def unacked(self, after_cp: int | None, max_bytes: int) -> list[SpooledCheckpoint]:
        out: list[SpooledCheckpoint] = []
        total = 0
        for cp in sorted(self.blocks):
            if after_cp is not None and cp <= after_cp:
                continue
            b = self.blocks[cp]
            size = len(b.message) + sum(map(len, b.records))
            if out and total + size > max_bytes:
                break
            damaged = cp in self.damaged
            out.append(SpooledCheckpoint(b.cp, b.first, b.last, b.message, b.hash,
                                         [] if damaged else list(b.records), damaged))
            total += size
        return out

    def apply_receipt(self, upto_seq: int, cp: int, cp_hash: bytes) -> int:
        b = self.blocks.get(cp)
        if b is None:
            if self._receipt is not None and cp <= self._receipt[0]:
                return 0
            self.receipts_refused += 1
            raise ReceiptMismatch(cp, upto_seq, "no such checkpoint in the spool")
        if b.hash != cp_hash or b.last != upto_seq:
            self.receipts_refused += 1
            raise ReceiptMismatch(cp, upto_seq, "checkpoint hash differs from ours")
        gone = [c for c in self.blocks if c <= cp]
        n = sum(len(self.blocks[c].records) for c in gone)
        for c in gone:
            del self.blocks[c]
        self._receipt = (cp, upto_seq)
        return n

    def last_receipt(self) -> tuple[int, int] | None:
        return self._receipt

    def stats(self) -> dict[str, Any]:
        return {"blocks": len(self.blocks), "records": sum(len(b.records) for b in self.blocks.values()),
                "damaged_blocks": sorted(self.damaged), "receipts_refused": self.receipts_refused}


class FrameClient:
    """A blocking frame client for tests (Unix socket)."""

    def __init__(self, path: str | Path, timeout_s: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder(16 * 1024 * 1024)
        self.inbox: list[Any] = []

    def send(self, obj: dict) -> None:
        self.sock.sendall(encode_frame(obj))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> Any:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("agent closed the connection")
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)

    def call(self, obj: dict) -> Any:
        self.send(obj)
        return self.recv()

    def close(self) -> None:
        self.sock.close()


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


class AgentHarness:
    """Run the real daemon in a background thread of this process (for integration tests)."""

    def __init__(self, directory: Path | str, device_id: str = "dev-test", *, engine: Any = None,
                 **overrides: Any) -> None:
        from .daemon_cli import init_agent
        from . import config as config_mod
        self.dir = Path(directory)
        paths = init_agent(device_id=device_id, directory=self.dir, quiet=True)
        doc = config_mod.tomllib.loads(paths.config.read_text())
        doc.setdefault("rules", {})["engine"] = "allow-all"
        for dotted, value in overrides.items():
            table, key = dotted.split("__", 1)
            doc.setdefault(table, {})[key] = value
        self.config = config_mod.from_mapping(doc, base_dir=self.dir, env={})
        self.enrollment = paths.enrollment
        self.engine = engine
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> "AgentHarness":
        from .daemon import run

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run(self.config, stop=self._stop, ready=lambda: self._ready.set(), signals=False,
                      engine=self.engine)

        def target() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - surfaced to the test by stop()
                self.error = exc
                self._ready.set()

        self._thread = threading.Thread(target=target, name="vt-agent-harness", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise RuntimeError(f"agent did not start: {self.error!r}")
        return self

    def client(self) -> FrameClient:
        return FrameClient(self.config.socket_path)

    def stop(self) -> None:
        self._ready.clear()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "AgentHarness":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
