"""The real agent, hosted in this process on the simulation's clock.

``AgentHost`` builds a device's agent exactly as ``agent.daemon.run`` does (``veritrail
agent init`` for keys, config and enrollment; ``open_chain``, the ``Spool``, ``Sealer``,
``Ledger``, the rules engine from ``make_engine``, the uplink from ``make_uplink`` and the
``IngestServer``) with one difference: the ledger reads the simulation clock, so records'
``wall``/``mono`` and every rule's ``now`` follow simulated time. Nothing is shortcut:
frames go through the ingest code, records through the Sealer into the SQLite spool.

Two ways in:
- ``socket=True``: the ingest server listens on its Unix socket and the real
  ``firmware_shim.Shim`` connects to it (the report and the demo, agent in its own thread);
- ``link()``: an in-memory transport into an ingest ``Connection`` (fleets: thousands of
  devices on one event loop, no socket and no shim thread per device). The frames are the
  protocol's own (``firmware_shim.framing``), replies are decoded from the bytes.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.core.chain import Sealer
from agent.core.record import decode
from agent.daemon import make_engine, make_uplink, open_chain
from agent.daemon_cli import init_agent
from agent.ingest import Connection, IngestServer
from agent.keystore import FileKeyStore
from agent.ledger import Ledger
from agent.spool import Spool
from agent.uplink_loop import LoopNetwork
from firmware_shim.framing import FrameDecoder, encode_frame

from .clock import Clock
from .link import Verdict


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    device_id: str
    device_class: str               # charger | tcu
    mode: str = "monitor"
    uplink: dict[str, Any] | None = None   # the [uplink] table, or None for none
    checkpoint_interval_ms: int | None = None
    heartbeat_ms: int | None = None
    max_bytes: int | None = None
    mqtt_on_loop: bool = True       # uplink's paho client driven by the asyncio loop (LoopNetwork), no
                                    # thread per device; False: paho's own thread, as the daemon does


class AgentHost:
    def __init__(self, directory: Path | str, config: HostConfig, clock: Clock) -> None:
        self.dir = Path(directory)
        self.host_config = config
        self.clock = clock
        paths = init_agent(device_id=config.device_id, directory=self.dir, quiet=True)
        self.enrollment = paths.enrollment
        doc = tomllib.loads(paths.config.read_text())
        doc.setdefault("rules", {}).update(device_class=config.device_class, mode=config.mode)
        if config.uplink is not None:
            doc["uplink"] = dict(config.uplink)
        ledger_table = doc.setdefault("ledger", {})
        for key, name in (("checkpoint_interval_ms", "checkpoint_interval_ms"), ("heartbeat_ms", "heartbeat_interval_ms")):
            value = getattr(config, key)
            if value is not None:
                ledger_table[name] = value
        if config.max_bytes is not None:
            doc.setdefault("spool", {})["max_bytes"] = config.max_bytes
        self.config = agent_config.from_mapping(doc, base_dir=self.dir, env={})
        self.counters: Counter[str] = Counter()
        self.spool: Spool | None = None
        self.ledger: Ledger | None = None
        self.engine: Any = None
        self.uplink: Any = None
        self.ingest: IngestServer | None = None

    async def start(self, *, socket: bool = False) -> None:
        cfg = self.config
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        keystore = FileKeyStore(cfg.key_dir)
        spool = self.spool = Spool(cfg.spool_path, max_bytes=cfg.spool.max_bytes, cache_kib=cfg.spool.cache_kib,
                                   compress=cfg.spool.compress)
        self.counters.update(spool.counters())
        problems: list[str] = []
        state = open_chain(spool, keystore, cfg.device_id, problems)
        state = replace(state, boot=state.boot + 1)
        spool.save_state(state)
        if keystore.fs_load() is not None:
            keystore.fs_erase()
        sealer = Sealer(state, keystore.signer())
        clock = self.clock
        self.ledger = Ledger(spool, sealer, cfg.ledger, backlog_records=cfg.ingest.backlog_records,
                             mono_ms=clock.mono_ms, wall_ms=clock.now_ms, counters=self.counters)
        self.engine, _ = make_engine(cfg)
        net = {"network": LoopNetwork()} if self.host_config.mqtt_on_loop and cfg.uplink_enabled else {}
        self.uplink = make_uplink(cfg, spool, on_control=lambda kind, payload: None, status=self.status, **net)
        if self.uplink is not None:
            self.ledger.on_commit.append(self.uplink.notify)
        await self.ledger.start({"kind": "agent", "api": "agent.start",
                                 "x": {"boot": state.boot, "version": "hw_sim-host", "problems": problems}})
        self.ingest = IngestServer(cfg.ingest, self.ledger, self.engine, socket_path=cfg.socket_path,
                                   status=self.status, counters=self.counters)
        if socket:
            await self.ingest.start()

    async def run(self) -> None:
        """The ledger's writer and timers (and the uplink); returns after ``stop()``."""
        assert self.ledger is not None, "start() first"
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.ledger.run())
            if self.uplink is not None:
                tg.create_task(self.uplink.run())

    async def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop_listening()
        if self.ledger is not None:
            await self.ledger.stop({"kind": "agent", "api": "agent.stop", "x": {}})
        if self.ingest is not None:
            self.ingest.close_connections()
        if self.uplink is not None:
            self.uplink.stop()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()

    def status(self) -> dict[str, Any]:
        return {"device_id": self.config.device_id, "counters": dict(self.counters),
                **(self.ledger.status() if self.ledger else {})}

    def link(self) -> "LoopLink":
        assert self.ingest is not None, "start() first"
        return LoopLink(self.ingest)

    def records(self) -> list[dict[str, Any]]:
        """Every record still in the spool, decoded, in seq order (unacknowledged ones only)."""
        assert self.spool is not None
        out = []
        for block in self.spool.iter_blocks():
            out.extend(decode(r) for r in block.records)
        return out


class _MemTransport(asyncio.Transport):
    def __init__(self, sink: Any) -> None:
        super().__init__()
        self._sink = sink
        self._closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self._sink(bytes(data))

    def close(self) -> None:
        self._closing = True

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class LoopLink:
    """A DeviceLink into an in-process agent's ingest, on the same event loop (no socket).

    ``record``/``update`` send frames and return at once; ``check`` returns an awaitable
    verdict that resolves when the agent's reply arrives (after the cmd record is durable).

    Frames reach the ingest in chunks, as back-to-back writes on the shim's socket arrive in
    one read: ``record``/``update`` frames wait for the end of the loop step, a ``check``
    goes at once together with them. So a twin update sent right before a command is judged
    at the same agent clock reading, and the command without delay. (Sent one by one, time
    compression would turn the microseconds between them into simulated seconds, and a
    measured value with a 2 s staleness limit would read as stale.)
    """

    def __init__(self, server: IngestServer) -> None:
        self._conn = Connection(server, True)
        self._conn.connection_made(_MemTransport(self._on_reply))
        self._decoder = FrameDecoder(1 << 20)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 1
        self.errors: Counter[str] = Counter()
        self._out: list[bytes] = []

    def _send(self, frame: dict[str, Any]) -> None:
        self._out.append(encode_frame(frame))
        if len(self._out) == 1:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:          # no loop running (a plain call): deliver now
                self._flush()

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out:
            self._conn.data_received(b"".join(out))

    def _on_reply(self, data: bytes) -> None:
        for msg in self._decoder.feed(data):
            if not isinstance(msg, dict):
                self.errors["undecodable_reply"] += 1
                continue
            if msg.get("t") == "err":
                self.errors[str(msg.get("code"))] += 1
            fut = self._waiting.pop(msg.get("id"), None) if msg.get("id") is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def record(self, api: str, **fields: Any) -> None:
        r = {"api": api, **{k: v for k, v in fields.items() if v is not None}}
        self._send({"t": "rec", "r": r})

    def update(self, **state: Any) -> None:
        if state:
            self._send({"t": "upd", "s": state})

    async def check(self, command: str, args: dict[str, Any], src: dict[str, Any],
                    sub: str | None = None) -> Verdict:
        cid = self._next_id
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        c: dict[str, Any] = {"cmd": command, "args": args, "src": src}
        if sub is not None:
            c["sub"] = sub
        self._send({"t": "chk", "id": cid, "c": c})
        self._flush()                     # the command now, with the frames before it in one chunk
        msg = await fut
        if msg.get("t") != "verdict":
            return Verdict(v="allow", source=f"agent_error:{msg.get('code')}")
        return Verdict(v=msg["v"], rules=tuple(msg.get("r") or ()), seq=msg.get("seq"), why=msg.get("why"))

    def as_shim(self) -> "LoopShim":
        """This link with the firmware shim's call shape, for the shim's OCPP guard."""
        return LoopShim(self, asyncio.get_running_loop())


class LoopShim:
    """``firmware_shim.Shim``'s surface (record, update, check from a worker thread, counters)
    over a LoopLink, so the shim's own OCPP guard runs unchanged in a fleet. ``check`` is
    called by the guard through ``asyncio.to_thread``; it hands the frame to the loop and
    waits for the agent's reply there, bounded by ``deadline_ms`` (then: fail-open verdict,
    as the shim's default policy, counted)."""

    def __init__(self, link: LoopLink, loop: asyncio.AbstractEventLoop, deadline_ms: int = 5000) -> None:
        self.link, self.loop, self.deadline_ms = link, loop, deadline_ms
        self.counters: Counter[str] = Counter()

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def record(self, api: str, src: Any = None, sub: Any = None, st: Any = None, lat: Any = None, rq: Any = None,
               rs: Any = None, kind: Any = None, **extra: Any) -> None:
        fields = {"src": src, "sub": sub, "st": st, "lat": lat, "rq": rq, "rs": rs, "kind": kind}
        if extra:
            fields["x"] = extra
        self.link.record(api, **fields)

    def update(self, _state: dict[str, Any] | None = None, **state: Any) -> None:
        self.link.update(**(_state or {}), **state)

    def check(self, command: str, args: Any = None, src: Any = None, sub: Any = None, deadline_ms: Any = None) -> Any:
        from firmware_shim.verdict import Verdict as ShimVerdict
        coro = self.link.check(command, args or {}, src if isinstance(src, dict) else {"id": src}, sub)
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            v = fut.result((deadline_ms or self.deadline_ms) / 1000)
        except TimeoutError:
            fut.cancel()
            self._count("check_timeouts")
            return ShimVerdict("allow", "fallback", "timeout")
        return ShimVerdict(v.v, "agent", None, list(v.rules), v.seq, None, v.why)
