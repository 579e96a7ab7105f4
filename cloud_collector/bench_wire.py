"""`veritrail bench wire`: bytes on the wire per record, against one-JSON-message-per-record.

Workload: ``cloud_collector.workload`` (a charger and a TCU, hw_sim stand-in), sealed with
the real Sealer under DESIGN §3's cut rules, grouped into batches the way the uplink does
(linger ``UplinkConfig.batch_linger_ms``, at once for security/start/stop checkpoints,
≤ 256 KiB), encoded with ``agent.core.batch``.

- ``bytes_per_record``: MQTT payload bytes of all batches ÷ records. Everything the
  collector needs is in there: every checkpoint (signature, forward-secure tag) and record.
- ``json_bytes_per_record``: the naive baseline, one compact JSON object per record (all
  its fields, no checkpoints, no signatures) as its own MQTT payload.
- Topic bytes are counted in **neither** (both would add ~20 bytes per MQTT message, which
  only widens the gap: 1 message per record vs 1 per batch).
Also: the collector's decode and verify+store throughput (records/s, SQLite on a temp file).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.core import batch
from agent.core.chain import Sealed
from agent.core.record import decode
from agent.uplink import URGENT, UplinkConfig

from . import workload
from .store.sqlite import SQLiteStore
from .verify import process_batch

LINGER_MS: int = UplinkConfig.__dataclass_fields__["batch_linger_ms"].default  # type: ignore[assignment]


def batches(sealed: list[tuple[int, Sealed]], linger_ms: int = LINGER_MS,
            limit: int = batch.MAX_PAYLOAD_BYTES) -> list[list[Sealed]]:
    """Group checkpoints as the uplink does when connected and receipts keep up."""
    out: list[list[Sealed]] = []
    pending: list[Sealed] = []
    since = 0
    raw = 0
    for t, s in sealed:
        if pending and t - since >= linger_ms:
            out.append(pending)
            pending, raw = [], 0
        if not pending:
            since = t
        pending.append(s)
        raw += len(s.message) + sum(map(len, s.records))
        why = decode_why(s.message)
        if why in URGENT or raw >= limit // 2:
            out.append(pending)
            pending, raw = [], 0
    if pending:
        out.append(pending)
    return out


def decode_why(message: bytes) -> str | None:
    from agent.core.checkpoint import parse
    return parse(message).why


def _sweep(progress, seconds: int) -> list[dict[str, Any]]:
    """bytes/record against device busyness and linger (mixed charger + TCU, time-compressed)."""
    out = []
    for speed in (1, 3, 10, 30):
        for linger in sorted({2_000, 10_000, LINGER_MS}):
            payload = json_total = n = 0
            for kind in ("charger", "tcu"):
                sealed, _ = workload.seal(kind, workload.events(kind, seconds, seed=11, speed=speed))
                for g in batches(sealed, linger):
                    payload += len(batch.encode(kind, [(s.message, s.records) for s in g]))
                recs = [r for _, s in sealed for r in s.records]
                json_total += _json_bytes(recs)
                n += len(recs)
            out.append({"records_per_s": round(n / seconds / 2, 1), "linger_ms": linger,
                        "bytes_per_record": round(payload / n, 1), "ratio": round(json_total / payload, 1)})
            progress(f"wire sweep: {out[-1]}")
    return out


def _json_bytes(records: list[bytes]) -> int:
    return sum(len(json.dumps(decode(r), separators=(",", ":"))) for r in records)


def run(quick: bool, progress) -> dict[str, Any]:
    seconds = 600 if quick else 3600
    codec = batch.default_codec()
    result: dict[str, Any] = {"seconds_simulated": seconds, "codec": codec, "linger_ms": LINGER_MS,
                              "topic_bytes_counted": "neither", "profiles": {}}
    total_payload = total_zlib = total_json = total_records = 0
    verify_s = decode_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "bench.db"))
        for kind in ("charger", "tcu"):
            dev = f"{kind}-0001"
            progress(f"wire: {kind}: {seconds} s of traffic")
            sealed, trust = workload.seal(dev, workload.events(kind, seconds, seed=7))
            groups = batches(sealed)
            records = [r for _, s in sealed for r in s.records]
            payloads = [batch.encode(dev, [(s.message, s.records) for s in g], codec=codec) for g in groups]
            zlib_bytes = sum(len(batch.encode(dev, [(s.message, s.records) for s in g], codec=batch.CODEC_ZLIB))
                             for g in groups)
            json_bytes = _json_bytes(records)
            # collector side: decode, then verify + store, per batch as it arrives
            t0 = time.perf_counter()
            decoded = [batch.decode(dev, p) for p in payloads]
            decode_s += time.perf_counter() - t0
            store.enroll(trust, 0)
            t0 = time.perf_counter()
            for items in decoded:
                r = process_batch(store, dev, items, 0)
                if r.stopped:
                    raise RuntimeError(f"bench batch did not verify: {r.stopped}")
            verify_s += time.perf_counter() - t0
            info = store.device(dev)
            stored = info["records"] if info is not None else 0
            if stored != len(records):
                raise RuntimeError(f"stored {stored} of {len(records)} records")
            n = len(records)
            result["profiles"][kind] = {
                "records": n, "records_per_s": round(n / seconds, 2), "checkpoints": len(sealed),
                "batches": len(groups), "bytes_per_record": round(sum(map(len, payloads)) / n, 2),
                "bytes_per_record_zlib": round(zlib_bytes / n, 2), "json_bytes_per_record": round(json_bytes / n, 1),
                "stored_bytes_per_record": round(sum(len(s.message) + sum(map(len, s.records)) for _, s in sealed) / n, 1),
            }
            total_payload += sum(map(len, payloads))
            total_zlib += zlib_bytes
            total_json += json_bytes
            total_records += n
        store.close()
    result["sweep"] = _sweep(progress, 120 if quick else 600)
    result.update({
        "records": total_records,
        "bytes_per_record": round(total_payload / total_records, 2),
        "bytes_per_record_zlib": round(total_zlib / total_records, 2),
        "json_bytes_per_record": round(total_json / total_records, 1),
        "ratio": round(total_json / total_payload, 1),
        "decode_records_per_s": round(total_records / decode_s),
        "verify_store_records_per_s": round(total_records / verify_s),
    })
    progress(f"wire: {result['bytes_per_record']} B/record vs JSON {result['json_bytes_per_record']} "
             f"({result['ratio']}x); verify+store {result['verify_store_records_per_s']} records/s")
    return result
