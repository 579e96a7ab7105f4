"""`veritrail bench chain`: encode + chain + Merkle + seal, batches of 256.

Baselines in the same run, over the same records:
- floor: bare ``msgpack.packb`` + one SHA-256 per record (the least any signed log pays);
- naive: one Ed25519 signature per record (what sealing saves).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Callable

import msgpack

from ..core.chain import ChainState, Sealer
from ..core.keys import Ed25519Signer

BATCH = 256


def workload(n: int) -> list[dict]:
    """Realistic charger/TCU api records (the header fields are added by the Sealer)."""
    apis = ["ocpp.MeterValues", "ocpp.StatusNotification", "ocpp.Heartbeat",
            "rest.GET /v1/status", "tcu.vehicle_state", "ocpp.TransactionEvent"]
    out = []
    for i in range(n):
        out.append({
            "kind": "api", "api": apis[i % len(apis)],
            "src": {"id": "csms-eu-1", "net": "10.1.2.3", "auth": "basic"},
            "sub": f"conn-{i % 2 + 1}", "st": 200, "lat": 800 + (i * 37) % 5000,
            "rq": 120 + i % 60, "rs": 64 + i % 30,
        })
    return out


def _rate(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def run(quick: bool, progress: Callable[[str], None]) -> dict:
    n = 25_600 if quick else 102_400
    reps = 5 if quick else 9
    records = workload(n)
    signer = Ed25519Signer.generate()
    packb = msgpack.Packer(use_bin_type=True).pack
    sha256 = hashlib.sha256

    # The floor packs the same full records the chain writes (header included), so the
    # comparison is per record, byte for byte.
    # Times come from a ms clock read once per ingest batch of 64 records, as the ledger does.
    times = [(i // 64, 1_700_000_000_000 + i // 64) for i in range(n)]
    full = [{"seq": i, "boot": 0, "mono": t[0], "wall": t[1], **r} for i, (r, t) in enumerate(zip(records, times))]

    def floor() -> int:  # as the issue defines it: bare msgpack.packb + one SHA-256
        for r in full:
            sha256(msgpack.packb(r)).digest()
        return n

    def floor_packer() -> int:  # stricter: a reused Packer avoids packb's per-call set-up
        for r in full:
            sha256(packb(r)).digest()
        return n

    def chain() -> int:
        sealer = Sealer(ChainState.genesis("bench-dev", os.urandom(32)), signer)
        append_batch, seal = sealer.append_batch, sealer.seal
        # Ingest hands over what one socket read brought: 64 records, one clock reading.
        for start in range(0, n, 64):
            mono, wall = times[start]
            append_batch(records[start:start + 64], mono, wall)
            if sealer.pending >= BATCH:
                seal(mono=mono, wall=wall, reason="size")
        if sealer.pending:
            seal(mono=mono, wall=wall, reason="size")
        return n

    naive_n = n // 8

    def naive() -> int:
        for r in full[:naive_n]:
            signer.sign(packb(r))
        return naive_n

    progress(f"bench chain: {n} records, batches of {BATCH}, {reps} repetitions (interleaved)")
    f_rates, p_rates, c_rates, n_rates = [], [], [], []
    for rep in range(reps):  # interleave so noise hits all alike
        f_rates.append(_rate(floor))
        p_rates.append(_rate(floor_packer))
        c_rates.append(_rate(chain))
        n_rates.append(_rate(naive))
        progress(f"  rep {rep + 1}/{reps}: floor {f_rates[-1]:,.0f}/s chain {c_rates[-1]:,.0f}/s naive {n_rates[-1]:,.0f}/s")
    floor_r, packer_r, chain_r, naive_r = (statistics.median(x) for x in (f_rates, p_rates, c_rates, n_rates))
    return {
        "records_per_s": round(chain_r),
        "floor_records_per_s": round(floor_r),
        "ratio_to_floor": round(chain_r / floor_r, 3),
        "floor_packer_records_per_s": round(packer_r),
        "ratio_to_packer_floor": round(chain_r / packer_r, 3),
        "naive_records_per_s": round(naive_r),
        "ratio_to_naive": round(chain_r / naive_r, 1),
        "batch": BATCH,
        "records": n,
        "quick": quick,
    }
