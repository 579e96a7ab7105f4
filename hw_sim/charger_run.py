"""Run a simulated charger against a CSMS: the part shared by the 1.6J and 2.0.1 adapters.

``ChargerSession`` owns the websocket, the version-specific ``ChargePoint`` subclass
(``charger_v16.Charger16`` / ``charger_v201.Charger201``), the shim's OCPP guard around
it, and four loops in one TaskGroup: receive, outbox pump (model events → OCPP calls),
heartbeat, and physics (meter, firmware steps, twin refresh).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any

import websockets

from .charger import ChargerModel
from .clock import Clock
from .link import DeviceLink

log = logging.getLogger("hw_sim.charger")

SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
_CLOSE_TIMEOUT_S = 1.0  # a stopping charger waits this long for the CSMS to answer its close (websockets: 10 s)


class ChargerError(Exception):
    """The charger could not connect to or talk with its CSMS (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    csms_url: str
    ocpp_version: str = "1.6"
    basic_auth_password: str | None = None
    physics_interval_s: float = 10.0     # simulated seconds between meter/twin ticks
    meter_interval_s: float = 60.0       # simulated seconds between MeterValues during a tx
    response_timeout_s: float = 10.0     # real seconds the CSMS has to answer a call
    connect_timeout_s: float = 5.0
    connect_attempts: int = 1            # > 1: retry a failed connect after 1, 2, 4 ... s (real), as chargers do

    def __post_init__(self) -> None:
        if self.ocpp_version not in SUBPROTOCOLS:
            raise ValueError(f"ocpp_version must be one of {sorted(SUBPROTOCOLS)}, got {self.ocpp_version!r}")
        if not self.csms_url.startswith(("ws://", "wss://")):
            raise ValueError(f"csms_url must be ws:// or wss://, got {self.csms_url!r}")
        for name in ("physics_interval_s", "meter_interval_s", "response_timeout_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.connect_attempts < 1:
            raise ValueError(f"connect_attempts must be >= 1, got {self.connect_attempts!r}")


class TwinPublisher:
    """Sends the model's twin to the agent: changed keys, plus the measured safety keys always."""

    ALWAYS_SUFFIX = ".current_a"

    def __init__(self, model: ChargerModel, link: DeviceLink) -> None:
        self.model, self.link = model, link
        self._last: dict[str, Any] = {}

    def publish(self) -> None:
        state = self.model.twin()
        out = {k: v for k, v in state.items()
               if k.endswith(self.ALWAYS_SUFFIX) or self._last.get(k, object()) != v}
        self._last = state
        if out:
            self.link.update(**out)


def apply_guard(cp: Any, link: DeviceLink, ocpp_version: str) -> Any:
    """Install the shim's OCPP guard (firmware_shim.integrations.ocpp_guard) on ``cp``.

    ``link`` must offer a shim: ``ShimLink.shim`` (the real Shim over its socket) or
    ``LoopLink.as_shim()`` (the same verbs into an in-process agent). A link with neither
    (``RecordingLink`` in model tests) leaves the charger unguarded; returns None then.
    """
    shim = getattr(link, "shim", None)
    if shim is None and hasattr(link, "as_shim"):
        shim = link.as_shim()
    if shim is None:
        return None
    from firmware_shim.integrations.ocpp_guard import guard_charge_point
    return guard_charge_point(cp, shim, csms_id="csms")


class ChargerSession:
    def __init__(self, model: ChargerModel, link: DeviceLink, clock: Clock, config: SessionConfig) -> None:
        self.model, self.link, self.clock, self.config = model, link, clock, config
        self.twin = TwinPublisher(model, link)
        self.cp: Any = None
        self.guard: Any = None
        self.connected = asyncio.Event()
        self.booted = asyncio.Event()
        self._stop = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self.connect_failures = 0

    def _make_cp(self, ws: Any) -> Any:
        if self.config.ocpp_version == "1.6":
            from .charger_v16 import Charger16 as cls
        else:
            from .charger_v201 import Charger201 as cls  # type: ignore[assignment]
        return cls(self.model.id, ws, model=self.model, session=self,
                   response_timeout=self.config.response_timeout_s)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Connect, boot, and serve until ``stop()`` or the connection closes."""
        cfg = self.config
        headers = {}
        if cfg.basic_auth_password is not None:
            token = base64.b64encode(f"{self.model.id}:{cfg.basic_auth_password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        for attempt in range(cfg.connect_attempts):
            try:
                ws = await asyncio.wait_for(websockets.connect(
                    cfg.csms_url, subprotocols=[SUBPROTOCOLS[cfg.ocpp_version]],
                    additional_headers=headers or None, open_timeout=cfg.connect_timeout_s,
                    close_timeout=_CLOSE_TIMEOUT_S), cfg.connect_timeout_s + 1)
                break
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self.connect_failures += 1
                if attempt + 1 == cfg.connect_attempts or self._stop.is_set():
                    raise ChargerError(f"connect {cfg.csms_url}: {type(exc).__name__}") from None
                try:
                    await asyncio.wait_for(self._stop.wait(), min(30.0, 2.0 ** attempt))
                except asyncio.TimeoutError:
                    pass
        async with ws:
            self.cp = self._make_cp(ws)
            self.guard = apply_guard(self.cp, self.link, cfg.ocpp_version)
            self.connected.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    recv = tg.create_task(self._receive())
                    tg.create_task(self._lifecycle(recv))
            except* websockets.exceptions.ConnectionClosed as eg:
                if self._stop.is_set():
                    log.info("charger %s: connection closed", self.model.id)
                else:
                    self.connect_failures += 1
                    log.warning("charger %s: connection lost: %s", self.model.id, eg.exceptions[0])

    async def _receive(self) -> None:
        await self.cp.start()

    async def _lifecycle(self, recv: asyncio.Task) -> None:
        self.model.on_emit = self._outbox_ready.set
        try:
            self.model.boot()
            await self.cp.send_boot()
            self.booted.set()
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._pump()), tg.create_task(self._heartbeat()),
                         tg.create_task(self._physics())]
                await self._stop.wait()
                for t in tasks:
                    t.cancel()
                self._outbox_ready.set()  # the loops below also end on _stop (see _pump)
        finally:
            self.model.on_emit = None
            recv.cancel()

    # The three loops also end when _stop is set, not only when cancelled: on Python 3.11 a
    # cancel that lands while ocpp's asyncio.wait_for() gets its response is lost (gh-86296),
    # and the charger then never stopped (a flaky hang in the hw_sim tests).
    async def _pump(self) -> None:
        while not self._stop.is_set():  # woken by the model's on_emit (no polling: fleets run hundreds)
            self._outbox_ready.clear()
            while self.model.outbox and not self._stop.is_set():
                event = self.model.outbox.popleft()
                await self.cp.send_event(event)
            self.twin.publish()
            await self._outbox_ready.wait()

    async def _heartbeat(self) -> None:
        while not self._stop.is_set():
            interval = float(self.model.configuration.get("HeartbeatInterval", "300") or 300)
            await self.clock.sleep(max(interval, 1.0))
            if not self._stop.is_set():
                await self.cp.send_heartbeat()

    async def _physics(self) -> None:
        cfg = self.config
        since_meter = 0.0
        last = self.clock.mono_ms()
        while not self._stop.is_set():
            await self.clock.sleep(cfg.physics_interval_s)
            now = self.clock.mono_ms()
            elapsed_s, last = (now - last) / 1000, now
            self.model.tick(elapsed_s)
            since_meter += elapsed_s
            if since_meter >= cfg.meter_interval_s:
                since_meter = 0.0
                for c in self.model.connectors.values():
                    if c.tx_id is not None:
                        self.model.meter_sample(c.id)
            if self.model.pending_firmware is not None:
                self.model.advance_firmware()
            self.twin.publish()
