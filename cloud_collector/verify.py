"""Per-checkpoint verification of one batch against the stored chain state (DESIGN §6).

``process_batch`` runs in one store transaction: load the device's state and keys, verify
each checkpoint with ``agent.core.verify.check``, store what is accepted, keep what is
ahead of the chain as pending (bounded), bridge evictions knowingly, raise alerts with
their evidence and count every outcome. Duplicates (same cp, same bytes) are ignored;
a different message with a stored number is a fork.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.core.checkpoint import parse
from agent.core.errors import CheckpointGap, CheckpointMalformed, Fork, RecordMalformed, Replayed, VerifyError
from agent.core.record import decode
from agent.core.verify import Outcome, apply_rotation, bridge, check, check_signature, eviction_of

from .errors import Rejected
from .store import Alert, DeviceRow, Store

SEVERITY = {"fork": "critical", "bad_signature": "high", "bad_fs_tag": "high", "key_revoked": "high",
            "chain_broken": "high", "root_mismatch": "high", "replayed": "warning", "unknown_key": "high"}


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyLimits:
    max_pending_checkpoints: int = 4096
    max_clock_skew_ms: int = 300_000


@dataclass
class BatchResult:
    receipt: tuple[int, int, bytes] | None = None  # (upto seq, cp, cp hash) to publish
    counts: Counter = field(default_factory=Counter)
    stopped: str | None = None                      # reason code when the batch was cut short


class _Device:
    def __init__(self, store: Store, row: DeviceRow, now_ms: int, limits: VerifyLimits, result: BatchResult) -> None:
        self.store, self.row, self.now, self.limits, self.result = store, row, now_ms, limits, result
        self.dev, self.state, self.keys = row.dev, row.state, dict(row.keys)
        self.added_records = self.added_cps = 0

    def alert(self, kind: str, severity: str, dedupe: str, detail: dict, **link) -> None:
        self.store.add_alert(Alert(self.dev, kind, severity, dedupe, detail, **link), self.now)
        self.result.counts[f"alerts.{kind}"] += 1

    def offer(self, message: bytes, records: Sequence[bytes]) -> bool:
        """Verify one checkpoint; False when the rest of the batch must not be tried."""
        counts = self.result.counts
        try:
            outcome = check(self.dev, self.keys, self.state, message, records,
                            stored_hash=lambda cp: self.store.stored_hash(self.dev, cp))
        except CheckpointGap as gap:  # validly signed, ahead of the chain: wait for the gap to fill
            if self.store.add_pending(self.dev, gap.got_cp, message, list(records), self.now,
                                      self.limits.max_pending_checkpoints):
                counts["pending"] += 1
            else:
                counts["rejected.pending_full"] += 1
            return True
        except Replayed as exc:  # validly signed, older than what we hold (bridged or pre-enrolment)
            counts["rejected.replayed"] += 1
            self.alert("replay", "warning", f"{exc.cp}", {"message": str(exc)}, cp=exc.cp, evidence=bytes(message))
            return True
        except Fork as exc:
            counts["rejected.fork"] += 1
            self.alert("fork", "critical", f"{exc.cp}:{exc.second_hash.hex()[:16]}",
                       {"stored_hash": exc.first_hash.hex(), "other_hash": exc.second_hash.hex()},
                       cp=exc.cp, evidence=bytes(message))
            self.result.stopped = "fork"
            return False
        except VerifyError as exc:
            counts[f"rejected.{exc.code}"] += 1
            self.alert(exc.code, SEVERITY.get(exc.code, "high"), f"{exc.cp}:{hashlib.sha256(message).hexdigest()[:16]}",
                       {"message": str(exc)}, cp=exc.cp, seq_first=exc.seq, seq_last=exc.seq, evidence=bytes(message))
            self.result.stopped = exc.code
            return False
        except CheckpointMalformed as exc:
            counts["rejected.malformed_checkpoint"] += 1
            self.alert("malformed_checkpoint", "high", exc.reason, {"message": str(exc)})
            self.result.stopped = "malformed_checkpoint"
            return False
        if outcome.kind == "duplicate":
            counts["duplicates"] += 1
            return True
        self.accept(outcome, list(records))
        return True

    def accept(self, outcome: Outcome, records: list[bytes]) -> None:
        cp = outcome.checkpoint
        self.store.save_checkpoint(self.dev, cp, records, outcome.records, self.now)
        self.store.tlog_queue(self.dev, cp.cp, cp.hash, self.now)  # the log integrates it in its next batch
        self.keys = apply_rotation(self.keys, outcome)
        self.state = outcome.state
        self.added_cps += 1
        self.added_records += cp.n
        self.result.counts["checkpoints"] += 1
        self.result.counts["records"] += cp.n
        if outcome.new_key is not None:
            self.alert("key_rotation", "info", outcome.new_key.kid, {"new_kid": outcome.new_key.kid}, cp=cp.cp)
        if cp.wall is not None and cp.wall > self.now + self.limits.max_clock_skew_ms:
            self.alert("clock_skew", "warning", f"boot{cp.boot}", {"device_wall_ms": cp.wall, "collector_ms": self.now},
                       cp=cp.cp)
        for i, rec in enumerate(outcome.records):
            self.findings(rec, cp.first + i, cp.cp)

    def findings(self, rec: dict, seq: int, cp: int) -> None:
        kind, verdict = rec.get("kind"), rec.get("v")
        link = {"cp": cp, "seq_first": seq, "seq_last": seq}
        detail = {k: rec.get(k) for k in ("api", "v", "r", "rb") if k in rec}
        if kind == "cmd" and verdict in ("alert", "block"):
            self.alert(f"verdict_{verdict}", "high" if verdict == "block" else "warning", str(seq), detail, **link)
        elif kind == "alert":
            self.alert("device_alert", "warning", str(seq), detail, **link)
        ev = eviction_of(rec)
        if ev is not None:
            self.alert("eviction", "warning", str(seq), {"first": ev["first"], "last": ev["last"], "cps": ev["cps"]}, **link)

    def drain(self) -> None:
        """Verify pending checkpoints that the chain has now reached."""
        while True:
            rows = self.store.pending_upto(self.dev, self.state.next_cp)
            if not rows:
                return
            for cp, message, records in rows:
                self.store.drop_pending(self.dev, cp)
                self.offer(message, records)

    def try_bridge(self) -> None:
        """A pending, validly signed ``agent.evicted`` record that starts where we stop bridges the gap."""
        for _, message, records in self.store.pending_all(self.dev):
            try:
                check_signature(parse(message), self.keys)
            except (VerifyError, CheckpointMalformed):
                continue
            for data in records:
                try:
                    ev = eviction_of(decode(data))
                except RecordMalformed:
                    continue
                bridged = bridge(self.state, ev, self.row.fs_k0) if ev is not None else None
                if bridged is not None:
                    info = {"from_seq": self.state.next_seq, "to_seq": bridged.next_seq - 1,
                            "from_cp": self.state.next_cp, "to_cp": bridged.next_cp - 1}
                    self.store.add_bridge(self.dev, info, self.now)
                    self.alert("eviction_bridged", "warning", str(info["from_cp"]), info,
                               seq_first=info["from_seq"], seq_last=info["to_seq"])
                    self.result.counts["bridges"] += 1
                    self.state = bridged
                    self.drain()
                    return

    def receipt(self) -> tuple[int, int, bytes] | None:
        st = self.state
        if st.next_cp == 0 or self.store.stored_hash(self.dev, st.next_cp - 1) != st.prev_cp_hash:
            return None
        return st.next_seq - 1, st.next_cp - 1, st.prev_cp_hash


def process_batch(store: Store, dev: str, items: Sequence[tuple[bytes, Sequence[bytes]]], now_ms: int,
                  limits: VerifyLimits = VerifyLimits()) -> BatchResult:
    """Verify and store one decoded batch; raises Rejected("unknown_device")."""
    result = BatchResult()
    with store.transaction():
        row = store.load_device(dev)
        if row is None:
            raise Rejected("unknown_device")
        d = _Device(store, row, now_ms, limits, result)
        for message, records in items:
            if not d.offer(message, records):
                break
        d.drain()
        d.try_bridge()
        store.save_state(dev, d.state, d.keys, now_ms, d.added_records, d.added_cps)
        result.receipt = d.receipt()
        result.counts["batches"] += 1
        store.bump(dict(result.counts))
        store.touch(dev, now_ms)
    return result
