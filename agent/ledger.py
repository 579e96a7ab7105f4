"""The ledger: drives the Sealer and hands sealed checkpoints to the spool (DESIGN §3, §4).

A checkpoint is cut after ``checkpoint_records`` records, ``checkpoint_bytes`` record bytes
or ``checkpoint_interval_ms``, after a security-class record or a sync write (see below),
at start and at orderly stop, and as an empty heartbeat when idle. A record someone waits for (a ``chk``
verdict, a ``sync`` write) is made durable first by journaling its bytes (the spool's
``journal`` table, committed like a checkpoint); the reply goes back on that commit and the
range is sealed (signed) as soon as no input has come for ``security_seal_quiet_ms`` (at once,
for the odd command), and at the latest ``security_seal_ms`` after it was journaled (a burst
of commands shares one checkpoint). So the signature is never on a reply's path. The
commit that stores the checkpoint deletes its journal rows; a crash in between leaves them
for ``agent.daemon.recover_journal`` to seal at the next start. Sealing happens on the
event loop (pure CPU); commits run on one writer thread, several queued checkpoints per
fsynced transaction, so ingest keeps going while the disk works. Callers wait for
durability with ``when_durable(seq, callback)``; callbacks run on the loop as soon as the
writer reports the commit (one thread hand-off each way, no Futures or extra tasks).
With ``[spool] synchronous = "off"`` (no fsync) a small commit (a journal row, a few
commands) is done on the loop when the writer is idle: handing it to the thread and back
would cost more than the commit itself. Larger ones go to the writer, where compressing
their records (zlib, without the GIL) does not hold up the loop.

Queue policy: sealed-but-uncommitted records are bounded by ``backlog_records``; above it
``congested`` is true and ingest stops reading sockets until the backlog halves.
When the spool is over ``max_bytes`` the oldest api-only checkpoints are evicted with a
signed ``agent.evicted`` record; when only security-class checkpoints are left, ``api``
records are dropped, counted and summarised in an ``agent.dropped`` record.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from .config import LedgerConfig
from .core.chain import Sealed, Sealer
from .core.errors import RecordInvalid
from .errors import SpoolError
from .spool import Eviction, Spool

log = logging.getLogger("veritrail.ledger")

DROPPED = "agent.dropped"
EVICTED = "agent.evicted"  # agent.core.verify.EVICTED (not imported: the daemon does not need verify)
_TICK_S = 0.05
_INLINE_MAX_RECORDS = 64  # synchronous="off": commits up to this size are done on the loop
_HEADER_BYTES = 24         # what the Sealer adds to a raw body at most (seq, boot, mono, wall, kind)
_Row = tuple[int, str, bytes]
_Job = tuple[list[Sealed], "Eviction | None", dict[str, int], list[_Row]]


def _mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Ledger:
    def __init__(self, spool: Spool, sealer: Sealer, config: LedgerConfig, *, backlog_records: int = 4096,
                 mono_ms: Callable[[], int] = _mono_ms, wall_ms: Callable[[], int] = _wall_ms,
                 counters: Counter[str] | None = None) -> None:
        self.spool = spool
        self.sealer = sealer
        self.config = config
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._mono_ms, self._wall_ms = mono_ms, wall_ms
        self.mono = mono_ms()
        self.wall = wall_ms()
        self._max_records = config.checkpoint_records
        self._max_bytes = config.checkpoint_bytes
        self._backlog_high = backlog_records
        self._queue: list[Sealed] = []
        self._journal_rows: list[_Row] = []     # open records to journal with the next commit
        self._journaled = sealer.next_seq - 1   # open records up to this seq are journaled
        self._seal_scheduled = False            # the seal after a journal commit is queued
        self._journal_since = 0                 # mono ms of the first journaled record not sealed
        self._input_at = self.mono              # mono ms of the last burst of input (flush)
        self._queued_records = 0
        self._inflight_records = 0
        self._waiters: deque[tuple[int, Callable[[], None]]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._urgent_due = False                # urgent() asked for a seal not yet done
        self._urgent_scheduled = False          # ... and its end-of-iteration callback is queued
        self._in_input = False                  # ingest is handling a read and will flush() after it
        self._kick_scheduled = False
        self._inflight = False                  # a commit is with the writer (one at a time)
        self._inline = spool.synchronous == "off"
        self._counters_saved: dict[str, int] = {}
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._open_since: int | None = None
        self._open_sec = False                  # the open range holds a security-class record
        self._last_seal = self.mono
        self._evict_plan: Eviction | None = None
        self._evicting = False
        self._drops_since_summary: Counter[str] = Counter()
        self._last_summary = self.mono
        self._stopping = False
        self.full = False                       # spool holds only security-class data: api dropped
        self.durable_seq = sealer.next_seq - 1  # everything <= this is committed
        self.last_commit_error: str | None = None
        self.on_commit: list[Callable[[], None]] = []
        self.on_relief: list[Callable[[], None]] = []

    # --- clock ----------------------------------------------------------------------
    def tick(self) -> None:
        """Refresh the cached clocks (once per batch of frames, not per record)."""
        self.mono = self._mono_ms()
        self.wall = self._wall_ms()

    # --- appending ------------------------------------------------------------------
    def append(self, fields: dict[str, Any]) -> int:
        """An api/state record; returns its seq, or -1 when dropped because the spool is full."""
        if self.full:
            self.counters["drop.spool_full"] += 1
            self._drops_since_summary["spool_full"] += 1
            return -1
        if self._open_sec:
            self._seal("security")
        seq = self.sealer.append(fields, self.mono, self.wall)[0]
        if self._range_full():
            self._seal("size")
        return seq

    def _range_full(self) -> bool:
        return self.sealer.pending >= self._max_records or self.sealer.pending_bytes >= self._max_bytes

    def append_batch(self, batch: list[dict[str, Any]]) -> list[RecordInvalid]:
        """Many api/state records read together; cuts checkpoints at exactly ``checkpoint_records``.
        Returns the errors of records that could not be encoded (the others are kept)."""
        return self._append_many(batch, None)

    def append_raw_batch(self, bodies: list[bytes], kinds: list[str | None]) -> list[RecordInvalid]:
        """As ``append_batch`` for records whose fields arrive packed and already checked
        (``recb`` frames: ``Sealer.append_raw_batch``)."""
        return self._append_many(bodies, kinds)

    def _append_many(self, batch: list[Any], kinds: list[str | None] | None) -> list[RecordInvalid]:
        n = len(batch)
        if self.full:
            self.counters["drop.spool_full"] += n
            self._drops_since_summary["spool_full"] += n
            return []
        if self._open_sec:
            self._seal("security")
        sealer, max_records, max_bytes, problems = self.sealer, self._max_records, self._max_bytes, []
        # raw bodies: their sizes are known, so a chunk never takes the open range past the byte cap
        ends = None if kinds is None else list(accumulate(map(_HEADER_BYTES.__add__, map(len, batch))))
        i = 0
        while i < n:
            room = max_records - sealer.pending
            if ends is not None:
                fit = bisect_right(ends, (ends[i - 1] if i else 0) + max_bytes - sealer.pending_bytes, i) - i
                if fit == 0 and sealer.pending:
                    self._seal("size")
                    continue
                room = max(1, min(room, fit))  # a body over the cap alone still gets a checkpoint
            whole = i == 0 and n <= room
            chunk = batch if whole else batch[i:i + room]
            try:
                if kinds is None:
                    sealer.append_batch(chunk, self.mono, self.wall)
                else:
                    sealer.append_raw_batch(chunk, kinds if whole else kinds[i:i + room], self.mono, self.wall)
            except RecordInvalid:  # all-or-nothing: redo one by one to keep the good ones
                for j, item in enumerate(chunk, i):
                    try:
                        if kinds is None:
                            sealer.append(item, self.mono, self.wall)
                        else:
                            sealer.append_raw_batch([item], [kinds[j]], self.mono, self.wall)
                    except RecordInvalid as exc:
                        problems.append(exc)
            i += len(chunk)
            if self._range_full() or (ends is not None and i < n):
                self._seal("size")
        return problems

    def append_security(self, fields: dict[str, Any]) -> int:
        """A cmd/alert/agent record: never dropped; its checkpoint is cut in this loop iteration.
        Security-class and api records never share a checkpoint, so api checkpoints stay evictable."""
        if self.sealer.pending and not self._open_sec:
            self._seal("flush")
        self._open_sec = True
        seq = self.sealer.append(fields, self.mono, self.wall)[0]
        if self._range_full():
            self._seal("size")
        self.urgent()
        return seq

    def begin_input(self) -> None:
        """Ingest starts handling a read and promises a ``flush()`` at its end: ``urgent()``
        needs no callback of its own until then (one loop iteration less per command)."""
        self.tick()
        self._in_input = True

    def urgent(self) -> None:
        """Make what is open durable at the end of this loop iteration, or at ``flush()`` if
        that comes first (several frames share one commit)."""
        self._urgent_due = True
        if not self._urgent_scheduled and not self._in_input:
            self._urgent_scheduled = True
            asyncio.get_running_loop().call_soon(self._seal_urgent)

    def _seal_urgent(self) -> None:
        self._urgent_scheduled = False
        self.flush()

    def flush(self) -> None:
        """End of a burst of input (ingest calls it after each read): seal what ``urgent()``
        asked for and hand what is sealed to the writer now rather than a loop iteration later."""
        self._input_at = self.mono
        self._in_input = False
        if self._urgent_due:
            self._urgent_due = False
            if self.sealer.pending:
                self._journal_open()
        if self._queue or self._journal_rows:
            self._kick()

    def _journal_open(self) -> None:
        """Journal the open range's new records (durable with the next commit); the range is
        sealed once input pauses (or ``security_seal_ms`` later), after the replies are written."""
        rows = self.sealer.open_rows(self._journaled)
        if rows:
            self._journal_rows += rows
            self._journaled = rows[-1][0]
            self._idle.clear()
        if not self._seal_scheduled:
            self._seal_scheduled = True
            self._journal_since = self.mono
            first = min(self.config.security_seal_quiet_ms, self.config.security_seal_ms)
            asyncio.get_running_loop().call_later(first / 1000, self._seal_journaled)

    def _seal_journaled(self) -> None:
        self._seal_scheduled = False
        now, quiet = self._mono_ms(), self.config.security_seal_quiet_ms
        deadline = self._journal_since + self.config.security_seal_ms
        if now - self._input_at < quiet and now < deadline and not self._stopping:
            self._seal_scheduled = True  # input is still coming: not in its way, unless overdue
            wait = min(quiet - (now - self._input_at), deadline - now)
            asyncio.get_running_loop().call_later(max(wait, 1) / 1000, self._seal_journaled)
            return
        if self.sealer.pending and self.sealer.state.next_seq <= self._journaled and not self._stopping:
            self._seal("security")
            self._kick()
        elif not (self._queue or self._inflight or self._journal_rows):
            self._idle.set()

    def when_durable(self, seq: int, callback: Callable[[], None]) -> None:
        if seq <= self.durable_seq:
            callback()
        else:
            self._waiters.append((seq, callback))

    @property
    def congested(self) -> bool:
        return self._queued_records + self._inflight_records + self.sealer.pending > self._backlog_high

    @property
    def backlog(self) -> int:
        return self._queued_records + self._inflight_records + self.sealer.pending

    def _seal(self, reason: str) -> Sealed:
        self.tick()
        sealed = self.sealer.seal(mono=self.mono, wall=self.wall, reason=reason)
        self._open_since = None
        self._open_sec = False
        self._last_seal = self.mono
        self._queue.append(sealed)
        self._queued_records += len(sealed.records)
        self._idle.clear()
        if not self._kick_scheduled:  # checkpoints sealed in this iteration go in one commit
            self._kick_scheduled = True
            asyncio.get_running_loop().call_soon(self._kick_soon)
        return sealed

    # --- lifecycle ------------------------------------------------------------------
    async def start(self, fields: dict[str, Any]) -> int:
        """Write the start record and wait until its checkpoint is durable."""
        self.tick()
        seq = self.sealer.append(fields, self.mono, self.wall)[0]
        self._seal("start")
        self._kick()
        await self._idle.wait()
        return seq

    async def run(self) -> None:
        """Timers, and the writer thread's health; returns after ``stop``, raises if the writer died."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._timers())
            tg.create_task(self._watch_writer())

    async def stop(self, fields: dict[str, Any]) -> None:
        """Final records and checkpoint, committed; then the writer and timers end."""
        self.tick()
        self._summarise_drops()
        if self.sealer.pending and not self._open_sec:
            self._seal("flush")
        self.sealer.append(fields, self.mono, self.wall)
        self._seal("stop")
        self._stopping = True
        self._kick()
        await self._idle.wait()
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if not self._finished().done():
            self._finished().set_result(None)

    async def drained(self) -> None:
        """Wait until everything sealed so far is committed."""
        await self._idle.wait()

    def reconfigure(self, config: LedgerConfig, backlog_records: int) -> None:
        """New limits (SIGHUP reload), from the next record and the next tick on."""
        self.config = config
        self._max_records, self._max_bytes = config.checkpoint_records, config.checkpoint_bytes
        self._backlog_high = backlog_records

    # --- background -----------------------------------------------------------------
    async def _timers(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_TICK_S)
            cfg = self.config  # (read each tick: a reload may replace it)
            self.tick()
            now = self.mono
            if self.sealer.pending:
                if self._open_since is None:
                    self._open_since = now
                elif now - self._open_since >= cfg.checkpoint_interval_ms:
                    self._seal("timer")
            elif now - self._last_seal >= cfg.heartbeat_interval_ms:
                self._seal("heartbeat")
            if self._drops_since_summary and now - self._last_summary >= cfg.drop_summary_interval_ms:
                self._summarise_drops()
            if self.full and self.spool.bytes_used <= self.spool.max_bytes:
                self.full = False
                self._summarise_drops()

    def _finished(self) -> asyncio.Future[None]:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        return self._done

    async def _watch_writer(self) -> None:
        await self._finished()  # None after stop(); the writer's exception if it died

    def _summarise_drops(self) -> None:
        if not self._drops_since_summary:
            return
        drops, self._drops_since_summary = dict(self._drops_since_summary), Counter()
        self._last_summary = self.mono
        log.warning("records dropped since last summary: %s", drops)
        self.append_security({"kind": "agent", "api": DROPPED, "x": {"n": drops}})

    # --- commits: one at a time, on the writer thread (or inline, see the module doc) ---
    def _kick_soon(self) -> None:
        self._kick_scheduled = False
        self._kick()

    def _kick(self) -> None:
        """Hand everything sealed to the writer unless a commit is under way (then it goes
        with the next one: several checkpoints per transaction)."""
        if self._inflight or not (self._queue or self._journal_rows):
            return
        blocks, self._queue = self._queue, []
        journal, self._journal_rows = self._journal_rows, []
        n = self._queued_records
        self._queued_records, self._inflight_records = 0, n
        evict, self._evict_plan = self._evict_plan, None
        saved = self._counters_saved  # counters ride with checkpoints, not with journal-only commits
        counters = {k: v for k, v in self.counters.items() if saved.get(k) != v} if blocks else {}
        self._inflight = True
        if self._inline and n <= _INLINE_MAX_RECORDS and evict is None:
            try:
                done = self.spool.commit(blocks, counters=counters, wait=False, journal=journal)
            except SpoolError as exc:
                self._commit_failed(exc.reason, len(blocks))
                done = False  # the writer retries it
            if done:
                self._committed(blocks, evict, counters, journal)
                return
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._write_loop, name="vt-spool", daemon=True)
            self._thread.start()
        self._jobs.put((blocks, evict, counters, journal))

    def _write_loop(self) -> None:
        """The writer thread: commit each job (retrying while the spool refuses), report on the loop."""
        loop = self._loop
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            blocks, evict, counters, journal = job
            delay = 0.05
            while True:
                try:
                    self.spool.commit(blocks, evict=evict, counters=counters, journal=journal)
                    break
                except SpoolError as exc:
                    self._report(loop, self._commit_failed, exc.reason, len(blocks))
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                except BaseException as exc:  # a bug: the daemon must see it, not hang
                    self._report(loop, self._writer_died, exc)
                    return
            self._report(loop, self._committed, blocks, evict, counters, journal)

    @staticmethod
    def _report(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def _commit_failed(self, reason: str, nblocks: int) -> None:
        self.counters["spool.commit_failed"] += 1
        self.last_commit_error = reason
        log.error("spool commit failed (%d checkpoints, retrying): %s", nblocks, reason)

    def _writer_died(self, exc: BaseException) -> None:
        log.error("spool writer failed: %s", type(exc).__name__)
        if not self._finished().done():
            self._finished().set_exception(exc)

    def _committed(self, blocks: list[Sealed], evict: Eviction | None, counters: dict[str, int],
                   journal: list[_Row]) -> None:
        self._inflight = False
        self._inflight_records = 0
        self._counters_saved.update(counters)
        # an empty checkpoint has last = first - 1; journal rows may run ahead of the blocks
        self.durable_seq = max(self.durable_seq, blocks[-1].last if blocks else -1, journal[-1][0] if journal else -1)
        if evict is not None:
            self._evicting = False
        waiters = self._waiters
        limit = self.durable_seq
        while waiters and waiters[0][0] <= limit:
            waiters.popleft()[1]()
        for cb in self.on_commit:
            cb()
        if not self.congested:
            for cb in self.on_relief:
                cb()
        self._after_commit()
        if self._queue or self._journal_rows:
            self._kick()
        if not self._queue and not self._inflight and not self._journal_rows and not self._seal_scheduled:
            self._idle.set()

    def _after_commit(self) -> None:
        spool = self.spool
        if spool.bytes_used <= spool.max_bytes:
            if self.full:
                self.full = False
                self._summarise_drops()
            return
        if self._evicting or self._stopping:
            return
        need = spool.bytes_used - (spool.max_bytes * 9) // 10
        plan = spool.plan_eviction(need)
        if plan is None:
            if not self.full:
                log.warning("spool full with security-class records only: api records are dropped from now on")
            self.full = True
            return
        self._evicting = True
        self._evict_plan = plan
        self.counters["evicted.blocks"] += plan.last_cp - plan.first_cp + 1
        self.counters["evicted.records"] += plan.records
        self.counters["evicted.bytes"] += plan.nbytes
        log.warning("spool over max_bytes: evicting checkpoints %d..%d (%d records)",
                    plan.first_cp, plan.last_cp, plan.records)
        # The eviction record is sealed now, so the commit that deletes the range carries it.
        if self.sealer.pending and not self._open_sec:
            self._seal("flush")
        self.sealer.append({"kind": "agent", "api": EVICTED, "x": {
            "first": plan.first, "last": plan.last, "cps": [plan.first_cp, plan.last_cp],
            "last_cp_hash": plan.last_cp_hash}}, self.mono, self.wall)
        self._seal("security")

    def status(self) -> dict[str, Any]:
        st = self.sealer.state
        return {"seq": self.sealer.next_seq, "boot": st.boot, "next_cp": st.next_cp,
                "durable_seq": self.durable_seq, "open_records": self.sealer.pending,
                "backlog_records": self.backlog, "spool_full": self.full,
                "last_commit_error": self.last_commit_error}
