"""The agent daemon: ingest → rules → ledger → spool → uplink, in one asyncio.TaskGroup.

Start-up order: lock the state dir, open the spool, recover the chain state (rebuilt from
the spool's tail if the state row is damaged), seal records a crash left in the journal
(under the boot that wrote them), bump and persist ``boot`` before use, erase
K_0 from the key store once the state holding K_next is durable, seal the start checkpoint,
then listen. SIGTERM/SIGINT: stop listening, seal and commit the final checkpoint, answer
what is pending, stop the uplink.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import importlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import AgentConfig
from .core.chain import ChainState, Sealer
from .core.checkpoint import genesis_hash
from .core.errors import RecordInvalid
from .core.keys import Signer, ed25519_backend, fs_key_at
from .core.record import MONO, WALL, decode as decode_record
from .errors import AgentError, ConfigError, SpoolCorrupt, SpoolError, StateLost
from .ingest import IngestServer
from .keystore import FileKeyStore
from .ledger import Ledger
from .reload import Reloader, SwappableUplink
from .sdnotify import Notifier
from .spool import Spool
from .watchdog import Service

log = logging.getLogger("veritrail.agent")
VERSION = "0.1.0"


def open_chain(spool: Spool, keystore: FileKeyStore, device_id: str, problems: list[str]) -> ChainState:
    """The chain state to continue from (not yet bumped); ``problems`` collects what was repaired."""
    state, found = spool.load_state()
    tail = spool.tail()
    if state is not None or tail.next_cp or tail.next_seq:
        problems.extend(p.replace(" ", "_") for p in found)
    slot = keystore.fs_load()
    if state is None:
        if tail.next_cp == 0 and tail.next_seq == 0:
            if slot is None or slot[0] != 0:
                raise StateLost("empty spool and no K_0 in the key store; run 'veritrail agent init --force' "
                                "and enroll the device again")
            return ChainState.genesis(device_id, slot[1])
        if slot is not None and slot[0] <= tail.next_cp:
            fs_key = fs_key_at(slot[1], tail.next_cp, from_epoch=slot[0])
        else:
            fs_key = os.urandom(32)
            problems.append("fs_key_lost")
            log.error("forward-secure key lost with the state row: the collector will flag the tags from "
                      "checkpoint %d on", tail.next_cp)
        problems.append("state_rebuilt_from_tail")
        return ChainState(device_id, tail.boot, tail.next_seq, tail.next_cp,
                          tail.prev_cp_hash or genesis_hash(device_id), fs_key)
    if state.device_id != device_id:
        raise StateLost(f"the spool belongs to device {state.device_id!r}, the config says {device_id!r}")
    if state.next_cp < tail.next_cp or state.next_seq < tail.next_seq:
        problems.append("state_behind_tail")
        fs_key = fs_key_at(state.fs_key, tail.next_cp, from_epoch=state.next_cp) \
            if tail.next_cp >= state.next_cp else state.fs_key
        state = ChainState(device_id, max(state.boot, tail.boot), max(state.next_seq, tail.next_seq),
                           max(state.next_cp, tail.next_cp), tail.prev_cp_hash or state.prev_cp_hash, fs_key)
    return state


def make_engine(config: AgentConfig) -> tuple[Any, bytes | None]:
    """(engine, fleet public key) from ``[rules]``; ``engine = "allow-all"`` (or no agent.rules
    installed) gives AllowAllJudge."""
    table = dict(config.rules)
    key = table.pop("fleet_public_key", None)
    fleet_key = bytes.fromhex(key) if key else None
    if table.pop("engine", "rules") == "allow-all":
        from .testing import AllowAllJudge
        return AllowAllJudge(), fleet_key
    try:
        rules = importlib.import_module("agent.rules")
        load_engine = rules.load_engine
    except (ModuleNotFoundError, AttributeError):
        log.warning("agent.rules.load_engine not available: commands are allowed unjudged (AllowAllJudge)")
        from .testing import AllowAllJudge
        return AllowAllJudge(), fleet_key
    state_dir = Path(config.state_dir)
    kwargs: dict[str, Any] = {
        "device_class": table.pop("device_class", "charger"), "mode": table.pop("mode", "monitor"),
        "state_path": state_dir / table.pop("state_path", "rules-state.json"),
        "bundle_dir": state_dir / table.pop("bundle_dir", "rules"),
        "fleet_public_key": fleet_key,
        "background_save": True,  # autosave fsyncs off the event loop (they took ~30 ms on it)
    }
    if "packs" in table:
        kwargs["packs"] = [Path(config.source or ".").parent / p for p in table.pop("packs")]
    try:
        return load_engine(**kwargs, **table), fleet_key
    except (ValueError, TypeError) as exc:
        raise ConfigError("rules", "", f"engine does not load: {exc}") from None
    except rules.RulesError as exc:
        # Recording everything matters more than judging: run unjudged, loudly (status, start record).
        log.error("rule packs do not load (%s): commands are recorded but allowed unjudged", exc)
        from .testing import AllowAllJudge
        judge = AllowAllJudge()
        judge.load_error = str(exc)[:200]
        return judge, fleet_key


def make_uplink(config: AgentConfig, spool: Spool, **kw: Any) -> Any:
    if not config.uplink_enabled:
        return None
    try:
        mod = importlib.import_module("agent.uplink")
    except ModuleNotFoundError as exc:
        if exc.name != "agent.uplink":
            raise
        log.warning("[uplink] is configured but agent.uplink is not installed: records stay in the spool")
        return None
    table = {k: v for k, v in config.uplink.items() if k != "enabled"}
    cfg_cls = mod.UplinkConfig
    try:
        ucfg = cfg_cls.from_table(table) if hasattr(cfg_cls, "from_table") else cfg_cls(**table)
    except TypeError as exc:
        raise ConfigError("uplink", "", str(exc)) from None
    return mod.Uplink(ucfg, spool, config.device_id, **kw)


def _lock(state_dir: Path) -> int:
    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AgentError(f"another agent is running on {state_dir}") from None
    return fd


def recover_journal(spool: Spool, state: ChainState, signer: Signer, problems: list[str]) -> ChainState:
    """Seal the records a crash left in the journal (committed, answered, not yet sealed) into
    one checkpoint of the boot that wrote them, signed with the key the state holds, and
    store it before anything else is written. Rows older than the state (already sealed) are
    dropped; rows that do not continue the chain are reported (``journal_unusable``)."""
    try:
        rows = [r for r in spool.journal() if r[0] >= state.next_seq]
    except SpoolCorrupt as exc:
        problems.append("journal_unreadable")
        log.error("journal unreadable (%s): records answered but not sealed before the last stop are lost",
                  exc.reason)
        rows = []
    run: list[tuple[int, str, bytes]] = []
    for row in rows:  # the contiguous run from next_seq (journal commits keep it so)
        if row[0] != state.next_seq + len(run):
            break
        run.append(row)
    if len(run) < len(rows):
        problems.append(f"journal_unusable:{len(rows) - len(run)}")
        log.error("journal: %d records do not continue the chain at seq %d and are lost",
                  len(rows) - len(run), state.next_seq + len(run))
    if run:
        sealer = Sealer(state, signer)
        try:
            sealer.restore(run)
        except RecordInvalid as exc:
            problems.append(f"journal_unusable:{len(run)}")
            log.error("journal: %d records not restorable (%s) and are lost", len(run), exc.reason)
        else:
            last = decode_record(run[-1][2])
            spool.commit([sealer.seal(mono=last[MONO], wall=last[WALL], reason="recovered")])
            problems.append(f"journal_recovered:{len(run)}")
            log.warning("journal: sealed %d records answered before a crash (seq %d..%d)",
                        len(run), run[0][0], run[-1][0])
            state = sealer.state
    try:
        spool.clear_journal()  # what is left is sealed now, or was before, or is reported above
    except SpoolError:
        pass  # (SpoolCorrupt too) reported above; checkpoint commits go on deleting what they cover
    return state


async def _scrub(spool: Spool, counters: Counter[str], stop: asyncio.Event, below_cp: int) -> None:
    """Read every block written before this start once (a few per tick) so damage at rest
    shows in status early. Blocks this boot writes are not chased: that would never end
    under steady input and would put block reads on the event loop for as long as it runs."""
    after: int | None = None
    while not stop.is_set():
        after = spool.scrub(after, 16, below_cp)
        counters["spool.damaged_blocks"] = len(spool.damaged)
        if after is None:
            return
        await asyncio.sleep(0.02)


async def run(config: AgentConfig, *, stop: asyncio.Event | None = None,
              ready: Callable[[], None] | None = None, signals: bool = True, engine: Any = None) -> int:
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    state_dir = Path(config.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = _lock(state_dir)
    started = time.time()
    try:
        keystore = FileKeyStore(config.key_dir)
        spool = Spool(config.spool_path, max_bytes=config.spool.max_bytes, cache_kib=config.spool.cache_kib,
                      synchronous=config.spool.synchronous, compress=config.spool.compress)
        counters: Counter[str] = Counter(spool.counters())
        problems: list[str] = list(spool.open_problems)
        if (check := spool.quick_check()):
            counters["spool.quick_check_failed"] += 1
            problems.append("quick_check: " + "; ".join(check[:3])[:200])
            log.error("spool structure damaged (%d problems); damaged blocks will be skipped", len(check))
        state = open_chain(spool, keystore, config.device_id, problems)
        signer = keystore.signer()
        state = recover_journal(spool, state, signer, problems)
        state = replace(state, boot=state.boot + 1)
        spool.save_state(state)            # boot persisted (and K_next held) before first use
        if keystore.fs_load() is not None:
            keystore.fs_erase()            # K_0 now lives only as K_next in the state row
        for p in problems:
            counters["state." + p.split(":")[0]] += 1
        sealer = Sealer(state, signer)
        ledger = Ledger(spool, sealer, config.ledger, backlog_records=config.ingest.backlog_records,
                        counters=counters)
        fleet_key: bytes | None = None
        if engine is None:
            engine, fleet_key = make_engine(config)
        if getattr(engine, "load_error", None):
            problems.append("rules_load_failed: " + engine.load_error)
            counters["rules.load_failed"] += 1
        uplink_box: list[Any] = []
        backend, why_not = ed25519_backend()  # "libcrypto" (system OpenSSL) or the cryptography fallback
        crypto = {"ed25519": backend, **({"fallback_reason": why_not} if why_not else {}), "alg": signer.alg}
        if why_not and signer.alg == "Ed25519":
            log.warning("signing through the cryptography package (%s): ~10 MiB more RSS", why_not)

        def status() -> dict[str, Any]:
            doc = {"device_id": config.device_id, "pid": os.getpid(), "version": VERSION,
                   "uptime_s": round(time.time() - started, 1), **ledger.status(),
                   "spool": spool.stats(), "counters": dict(counters),
                   "connections": len(ingest.connections) if ingest else 0,
                   "rules": engine.status() if hasattr(engine, "status") else None,
                   "uplink": uplink_box[0].state() if uplink_box else {"state": "disabled"},
                   "crypto": crypto}
            return doc

        def on_control(kind: str, payload: bytes) -> None:
            loop.call_soon_threadsafe(_control, kind, payload)

        def _control(kind: str, payload: bytes) -> None:
            ledger.tick()
            if kind != "rules":
                counters["control.unhandled." + kind[:32]] += 1
                return
            try:
                if fleet_key is None:
                    raise ConfigError("rules.fleet_public_key", None, "not set: rule bundles cannot be checked")
                version = engine.install_bundle(payload, fleet_key)
            except Exception as exc:  # noqa: BLE001 - the old bundle stays; refusal is recorded
                counters["rules.bundle_rejected"] += 1
                ledger.append_security({"kind": "agent", "api": "agent.rules_rejected",
                                        "x": {"reason": str(exc)[:200]}})
                return
            ledger.append_security({"kind": "agent", "api": "agent.rules", "x": {"version": version}})

        ingest: IngestServer | None = None
        uplink = make_uplink(config, spool, on_control=on_control, status=status)
        if uplink is not None:
            uplink = SwappableUplink(uplink)  # a reload may rebuild it (agent/reload.py)
            uplink_box.append(uplink)
            ledger.on_commit.append(uplink.notify)
        await ledger.start({"kind": "agent", "api": "agent.start",
                            "x": {"boot": state.boot, "version": VERSION, "problems": problems}})
        service = Service(Notifier.from_env(), ledger, uplink, counters)  # systemd: READY, WATCHDOG, STOPPING
        ingest = IngestServer(config.ingest, ledger, engine, socket_path=config.socket_path,
                              status=status, counters=counters)
        await ingest.start()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, Reloader(
                config, ledger=ledger, ingest=ingest, spool=spool, engine=engine, uplink=uplink, counters=counters,
                make_uplink=lambda c: make_uplink(c, spool, on_control=on_control, status=status),
                service=service, stop=stop).request)
        log.info("agent %s running: device %s boot %d seq %d", VERSION, config.device_id, state.boot,
                 sealer.next_seq)
        # Start-up objects (modules, rules, keys) never die: keep them out of every GC pass,
        # so collections triggered by the per-frame dicts only look at young objects.
        gc.freeze()
        if ready is not None:
            ready()
        service.ready()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ledger.run(), name="ledger")
            tg.create_task(service.run(stop), name="watchdog")
            tg.create_task(_scrub(spool, counters, stop, state.next_cp), name="scrub")
            if uplink is not None:
                tg.create_task(uplink.run(), name="uplink")
            await stop.wait()
            service.stopping()
            log.info("stopping: final checkpoint")
            ingest.stop_listening()
            await ledger.stop({"kind": "agent", "api": "agent.stop", "x": {"boot": state.boot}})
            ingest.close_connections()
            if uplink is not None:
                uplink.stop()
        if hasattr(engine, "save_state"):
            try:
                engine.save_state(ledger.wall)
            except Exception as exc:  # noqa: BLE001 - rules state is best effort at stop
                log.error("rules state not saved: %s", type(exc).__name__)
        spool.close()
        log.info("stopped at seq %d", sealer.next_seq)
        return 0
    finally:
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        os.close(lock_fd)
