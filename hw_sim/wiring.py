"""Wiring to the real parts: the firmware shim as a DeviceLink, and an agent in its own thread.

``ShimLink`` adapts ``firmware_shim.Shim`` (blocking, bounded by its deadline) to the
models' ``DeviceLink``. Because the shim blocks its caller, the agent it talks to must not
share that caller's event loop: ``ThreadedAgent`` runs an ``AgentHost`` (real agent parts,
listening on its Unix socket) on a loop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .agent_host import AgentHost, HostConfig
from .clock import Clock
from .link import Verdict


class ShimLink:
    def __init__(self, shim: Any) -> None:
        self.shim = shim

    @classmethod
    def connect(cls, socket_path: Path | str, **settings: Any) -> "ShimLink":
        from firmware_shim.shim import Shim
        shim = Shim(agent=f"unix:{socket_path}", **settings)
        shim.start()
        return cls(shim)

    def record(self, api: str, **fields: Any) -> None:
        self.shim.record(api, **fields)

    def update(self, **state: Any) -> None:
        self.shim.update(state)

    def check(self, command: str, args: dict[str, Any], src: dict[str, Any], sub: str | None = None) -> Verdict:
        v = self.shim.check(command, args, src, sub)
        return Verdict(v=v.action, rules=tuple(v.rules), seq=v.seq, why=v.why,
                       source=v.source if v.source == "agent" else f"fallback:{v.reason}")

    def flush(self, timeout_ms: int = 2000) -> bool:
        return bool(self.shim.flush(timeout_ms))

    def close(self) -> None:
        self.shim.close()


class ThreadedAgent:
    """An AgentHost on its own event loop in a daemon thread, ingest on its Unix socket."""

    def __init__(self, directory: Path | str, config: HostConfig, clock: Clock) -> None:
        self.host = AgentHost(directory, config, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.final_records: list[dict[str, Any]] = []   # the spool's records, read at stop()

    @property
    def socket_path(self) -> Path:
        return Path(self.host.config.socket_path)

    def start(self, timeout_s: float = 30.0) -> "ThreadedAgent":
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.host.start(socket=True)
            runner = asyncio.ensure_future(self.host.run())
            self._ready.set()
            await self._stop.wait()
            await self.host.stop()
            await runner

        def target() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - surfaced by start()/stop()
                self.error = exc
                self._ready.set()

        self._thread = threading.Thread(target=target, name=f"sim-agent-{self.host.config.device_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise RuntimeError(f"agent {self.host.config.device_id} did not start: {self.error!r}")
        return self

    def call(self, coro_fn: Any, timeout_s: float = 30.0) -> Any:
        """Run ``coro_fn()`` on the agent's loop and return its result."""
        assert self._loop is not None
        fut: Future = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)
        return fut.result(timeout_s)

    def drained(self) -> None:
        ledger = self.host.ledger
        assert ledger is not None
        self.call(ledger.drained)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self.host.spool is not None:
            self.final_records = self.host.records()
        self.host.close()
        if self.error is not None:
            raise RuntimeError(f"agent {self.host.config.device_id} failed: {self.error!r}")
