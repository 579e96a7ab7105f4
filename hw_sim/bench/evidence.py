"""`veritrail bench evidence`: the collector's log and evidence bundles at scale (issue 13).

    log_appends_per_s   leaves integrated into the collector's log, in production batches
                        (TransparencyLog.integrate_all, MAX_BATCH leaves per transaction)
    evidence_p95_ms     GET /api/alerts/{id}/evidence with 1,000,000 records stored (--quick: 100,000)
    static_p95_ms       a static answer of the same server, same run, interleaved request by request

Setup bulk-loads the store directly (real device chains sealed and signed by the core's
Sealer, stored through the store's own save_checkpoint), then serves the real router on
uvicorn and asks with a keep-alive stdlib client.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from agent.core.chain import ChainState, Sealer
from agent.core.checkpoint import parse
from agent.core.export import Trust, enrollment_doc
from agent.core.keys import generate_signer
from agent.core.verify import VerifyState
from cloud_collector.store import Alert
from cloud_collector.store.sqlite import SQLiteStore
from cloud_collector.tlog import TransparencyLog, log_signer

PER_CHECKPOINT = 1000          # records per checkpoint (DESIGN §3 cuts at 1024): the evidence worst case
APIS = ["ocpp.MeterValues", "ocpp.StatusNotification", "ocpp.Heartbeat", "ocpp.TransactionEvent"]


def _load(store: SQLiteStore, devices: int, records_per_device: int, progress: Callable[[str], None]) -> list[tuple[str, int]]:
    """Sealed chains into the store; returns (dev, seq) of every stored record that is a command."""
    commands: list[tuple[str, int]] = []
    for k in range(devices):
        dev = f"cp-{k:05d}"
        signer, k0 = generate_signer(), os.urandom(32)
        store.enroll(Trust.from_enrollment(enrollment_doc(dev, [(signer.kid, signer.alg, signer.public_bytes())], k0)), 0)
        sealer = Sealer(ChainState.genesis(dev, k0), signer)
        t = 0
        with store.transaction():
            for start in range(0, records_per_device, PER_CHECKPOINT):
                n = min(PER_CHECKPOINT, records_per_device - start)
                batch = [{"kind": "cmd", "api": "ocpp.UnlockConnector", "v": "alert", "r": ["CP-01"]} if i % 97 == 13
                         else {"kind": "api", "api": APIS[i % 4], "src": {"id": "csms"}, "st": 200, "lat": 900 + i % 500}
                         for i in range(start, start + n)]
                t += 10_000
                sealer.append_batch(batch, t, 1_700_000_000_000 + t)
                s = sealer.seal(mono=t, wall=1_700_000_000_000 + t, reason="size")
                cp = parse(s.message)
                decoded = [{"kind": b["kind"], "api": b["api"], "wall": 1_700_000_000_000 + t} for b in batch]
                store.save_checkpoint(dev, cp, list(s.records), decoded, t)
                store.tlog_queue(dev, cp.cp, cp.hash, t)
                commands += [(dev, start + i) for i, b in enumerate(batch) if b["kind"] == "cmd"]
            store.save_state(dev, sealer_state(sealer), {}, t, records_per_device, -(-records_per_device // PER_CHECKPOINT))
        if (k + 1) % max(1, devices // 5) == 0:
            progress(f"  loaded {k + 1}/{devices} devices ({(k + 1) * records_per_device} records)")
    return commands


def sealer_state(sealer: Sealer) -> VerifyState:
    st = sealer.state
    return VerifyState(st.next_seq, st.next_cp, st.prev_cp_hash, st.boot, None)


def _appends(store: SQLiteStore, log: TransparencyLog, n: int) -> float:
    """Queue n leaves as ingest would (not timed), then time their integration."""
    rng = random.Random(1)
    with store.transaction():
        for i in range(n):
            store.tlog_queue(f"cp-x{i % 1000:04d}", 1_000_000 + i // 1000, rng.randbytes(32), 1_700_000_000_000 + i)
    t0 = time.perf_counter()
    done = log.integrate_all()
    elapsed = time.perf_counter() - t0
    if done != n:
        raise RuntimeError(f"integrated {done} of {n}")
    return n / elapsed


class _Server:
    def __init__(self, store: SQLiteStore) -> None:
        import uvicorn
        from fastapi import FastAPI

        from cloud_collector.tlog.routes import router

        app = FastAPI()
        app.state.store = store
        app.include_router(router(lambda role: (lambda: SimpleNamespace(name="bench", role="viewer"))))

        @app.get("/static")
        def static() -> dict:
            return {"status": "ok"}

        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="bench-http", daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _get_ms(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return (time.perf_counter() - t0) * 1000, resp.status, len(body)


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


def run(quick: bool, progress: Callable[[str], None]) -> dict:
    total = 100_000 if quick else 1_000_000
    devices = 100
    appends = 50_000 if quick else 200_000
    requests = 200 if quick else 400
    with tempfile.TemporaryDirectory(prefix="vt-bench-evidence-") as tmp:
        store = SQLiteStore(str(Path(tmp) / "collector.db"))
        t0 = time.perf_counter()
        progress(f"loading {total} records ({devices} devices, {PER_CHECKPOINT} records per checkpoint)")
        commands = _load(store, devices, total // devices, progress)
        log = TransparencyLog(store, log_signer(generate_signer()))
        log.integrate_all()
        rng = random.Random(13)
        picked = rng.sample(commands, min(200, len(commands)))
        with store.transaction():
            for dev, seq in picked:
                store.add_alert(Alert(dev, "verdict_alert", "warning", str(seq), {"api": "ocpp.UnlockConnector"},
                                      seq_first=seq, seq_last=seq), 1)
        alert_ids = [r[0] for r in store._q("SELECT id FROM alerts ORDER BY id")]
        progress(f"loaded in {time.perf_counter() - t0:.1f} s; integrating {appends} more log leaves")
        rate = _appends(store, log, appends)
        size = store.tlog_head()[0]
        progress(f"log: {rate:,.0f} appends/s; tree size {size}; serving {requests} requests of each kind")
        static_ms, evidence_ms, sizes = [], [], []
        with _Server(store) as srv:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            for i in range(20):  # warm-up: connection, thread pool, SQLite page cache of the indexes
                _get_ms(conn, "/static")
                _get_ms(conn, f"/api/alerts/{alert_ids[i % len(alert_ids)]}/evidence")
            for i in range(requests):
                ms, status, _ = _get_ms(conn, "/static")
                static_ms.append(ms)
                ms, status, n = _get_ms(conn, f"/api/alerts/{alert_ids[i % len(alert_ids)]}/evidence")
                if status != 200:
                    raise RuntimeError(f"evidence answered {status}")
                evidence_ms.append(ms)
                sizes.append(n)
            conn.close()
        store.close()
    ev, st = _p95(evidence_ms), _p95(static_ms)
    progress(f"evidence p95 {ev:.2f} ms, static p95 {st:.2f} ms (ratio {ev / st:.1f}, goal <= 10)")
    return {
        "quick": quick,
        "records_stored": total,
        "log_appends_per_s": round(rate),
        "log_batch": log.max_batch,
        "log_tree_size": size,
        "evidence_p95_ms": round(ev, 3),
        "evidence_p50_ms": round(statistics.median(evidence_ms), 3),
        "static_p95_ms": round(st, 3),
        "static_p50_ms": round(statistics.median(static_ms), 3),
        "evidence_to_static_p95": round(ev / st, 2),
        "bundle_bytes_median": int(statistics.median(sizes)),
        "requests": requests,
        "goal_log_appends_per_s": 10_000,
        "goal_evidence_to_static_p95": 10,
    }
