"""SIGHUP (``systemctl reload``): re-read the config file and apply what may change at run time.

Reloadable (``RELOADABLE``): the ingest limits, every ``[ledger]`` option, ``[spool] max_bytes``,
``[rules] mode``, and the whole ``[uplink]`` table while it stays enabled (TLS files, host,
credentials, batching: the uplink is rebuilt and resends after the last receipt; delivery is
at-least-once and the collector idempotent, so nothing is lost or stored twice). Everything
else (device id, paths, sockets, the spool's durability and format, rule packs and keys) is
fixed for the process's life.

A reload is all or nothing: the new file must load and validate, and change nothing fixed;
otherwise nothing changes, the error names the options (log, counter ``reload.refused`` or
``reload.failed``, and a signed ``agent.reload_refused`` record). An applied reload is recorded
as ``agent.reload`` with the names of the changed options (not their values). Ingest never
stops reading: the reload runs on the event loop between two reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .config import AgentConfig, load
from .core.errors import KeyStoreError
from .errors import AgentError

__all__ = ["RELOADABLE", "Reloader", "SwappableUplink", "diff"]

log = logging.getLogger("veritrail.reload")

_ALL = None  # every option of the table
RELOADABLE: dict[str, frozenset[str] | None] = {
    "ingest": frozenset({"max_frame_bytes", "max_connections", "max_pending_replies", "backlog_records",
                         "max_batch_records"}),
    "ledger": _ALL,
    "spool": frozenset({"max_bytes"}),
    "rules": frozenset({"mode"}),
    "uplink": _ALL,                       # while enabled before and after
}
MODES = ("monitor", "enforce")


def _table(config: AgentConfig, name: str) -> Mapping[str, Any]:
    if name == "agent":
        return {k: getattr(config, k) for k in ("device_id", "state_dir", "key_dir")}
    value = getattr(config, name)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value)


def diff(old: AgentConfig, new: AgentConfig) -> tuple[list[str], list[str]]:
    """(changed options that may change at run time, changed options that may not)."""
    ok: list[str] = []
    fixed: list[str] = []
    if old.uplink_enabled != new.uplink_enabled:
        fixed.append("uplink.enabled")
    for name in ("agent", "ingest", "ledger", "spool", "rules", "uplink"):
        a, b = _table(old, name), _table(new, name)
        allowed = RELOADABLE.get(name, frozenset())
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                (ok if allowed is _ALL or key in allowed else fixed).append(f"{name}.{key}")
    if "uplink.enabled" in fixed:
        ok = [k for k in ok if not k.startswith("uplink.")]
    return ok, fixed


def _check_tls(table: Mapping[str, Any]) -> None:
    """Load the TLS files as the uplink will; raises AgentError naming the option."""
    ca, cert, key = table.get("tls_ca_file"), table.get("tls_cert_file"), table.get("tls_key_file")
    if not ca:
        return
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise AgentError(f"uplink.tls_*: {ca}, {cert}, {key} do not load: {exc}") from None


class SwappableUplink:
    """The uplink behind one long-lived task, so a reload can replace it: ``run()`` runs the
    current one until it stops; a replacement (``swap``) then takes over."""

    def __init__(self, uplink: Any) -> None:
        self.current = uplink
        self._next: Any = None
        self._stopping = False
        self.swaps = 0

    @property
    def client(self) -> Any:
        return self.current.client

    def notify(self) -> None:
        self.current.notify()

    def state(self) -> dict[str, Any]:
        return dict(self.current.state(), swaps=self.swaps)

    def swap(self, uplink: Any) -> None:
        self._next = uplink
        self.swaps += 1
        self.current.stop()

    def stop(self) -> None:
        self._stopping = True
        self._next = None
        self.current.stop()

    async def run(self) -> None:
        while True:
            await self.current.run()
            if self._next is None or self._stopping:
                return
            self.current, self._next = self._next, None


class Reloader:
    def __init__(self, config: AgentConfig, *, ledger: Any, ingest: Any, spool: Any, engine: Any,
                 uplink: SwappableUplink | None, make_uplink: Callable[[AgentConfig], Any],
                 counters: Counter[str], service: Any = None, stop: asyncio.Event | None = None,
                 loader: Callable[[str], AgentConfig] = load) -> None:
        self.config = config
        self.ledger, self.ingest, self.spool, self.engine = ledger, ingest, spool, engine
        self.uplink, self.make_uplink, self.counters, self.service = uplink, make_uplink, counters, service
        self.loader = loader
        self.stop = stop

    def request(self) -> None:
        """The SIGHUP handler (on the loop): reload now (not once the agent is stopping)."""
        if self.stop is not None and self.stop.is_set():
            self.counters["reload.ignored_stopping"] += 1
            return
        if self.service is not None:
            self.service.reloading()
        try:
            self.reload()
        finally:
            if self.service is not None:
                self.service.ready()

    def _refuse(self, counter: str, message: str, x: dict[str, Any]) -> None:
        self.counters[counter] += 1
        log.error("reload refused: %s", message)
        self.ledger.append_security({"kind": "agent", "api": "agent.reload_refused", "x": x})

    def reload(self) -> list[str] | None:
        """Apply the file's reloadable changes; the changed names, or None if refused."""
        self.counters["reload.requests"] += 1
        source = self.config.source
        if source is None:
            self._refuse("reload.failed", "the agent was not started from a config file", {"reason": "no_file"})
            return None
        try:
            new = self.loader(source)
            changed, fixed = diff(self.config, new)
            if fixed:
                self._refuse("reload.refused", f"{', '.join(fixed)} cannot change at run time (restart the agent)",
                             {"fixed": fixed})
                return None
            mode = new.rules.get("mode", "monitor")
            if "rules.mode" in changed and mode not in MODES:
                raise AgentError(f"rules.mode = {mode!r}: must be one of {', '.join(MODES)}")
            uplink = None
            if any(k.startswith("uplink.") for k in changed):
                _check_tls(new.uplink)  # the new uplink loads them only when it connects
                uplink = self.make_uplink(new)
        except (AgentError, KeyStoreError, OSError, ssl.SSLError) as exc:
            self._refuse("reload.failed", str(exc)[:300], {"reason": str(exc)[:200]})
            return None
        if not changed:
            log.info("reload: nothing changed")
            return changed
        # From here on nothing can fail: every value was validated above.
        if any(k.startswith("ingest.") for k in changed):
            self.ingest.config = new.ingest
        if any(k.startswith(("ledger.", "ingest.backlog")) for k in changed):
            self.ledger.reconfigure(new.ledger, new.ingest.backlog_records)
        if "spool.max_bytes" in changed:
            self.spool.max_bytes = new.spool.max_bytes
        if "rules.mode" in changed and hasattr(self.engine, "mode"):
            self.engine.mode = mode
        if uplink is not None and self.uplink is not None:
            self.uplink.swap(uplink)
        self.config = new
        self.counters["reload.applied"] += 1
        log.warning("reload applied: %s", ", ".join(changed))
        self.ledger.append_security({"kind": "agent", "api": "agent.reload", "x": {"changed": changed}})
        return changed

