"""A device's stored chain as the export file `veritrail verify` checks (agent/core/export.py).

Whole checkpoints only (a root covers all of its records): from the checkpoint holding
``from_seq`` to the one holding ``to_seq``. When that is not the device's first checkpoint,
the header's ``start`` says where the chain is picked up (its seq, cp, prev_cp hash and the
boot of the checkpoint before), so the verifier starts from there instead of genesis.
Read in chunks of checkpoints; the file is written as it is read.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from agent.core.checkpoint import parse
from agent.core.export import write_export

from .errors import CollectorError
from .store import Store


class ExportUnavailable(CollectorError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"export: {reason}")
        self.reason = reason


def _cp_at(store: Store, dev: str, seq: int) -> int:
    cp = store.record_cp(dev, seq)
    if cp is None:
        raise ExportUnavailable(f"seq {seq} of {dev} is not stored")
    return cp


def export_device(store: Store, dev: str, out: BinaryIO, from_seq: int | None = None,
                  to_seq: int | None = None) -> dict[str, Any]:
    bounds = store.cp_bounds(dev)
    if bounds is None:
        raise ExportUnavailable(f"no stored checkpoints for {dev!r}")
    first_cp = bounds[0] if from_seq is None else _cp_at(store, dev, from_seq)
    last_cp = bounds[1] if to_seq is None else _cp_at(store, dev, to_seq)
    if last_cp < first_cp:
        raise ExportUnavailable("--to-seq is before --from-seq")
    keys = [{"kid": kid, "alg": alg, "pub": pub} for kid, alg, pub, *_ in store.device_keys(dev)]
    start = None
    head = store.checkpoint_rows(dev, first_cp, first_cp, 1)
    if first_cp != 0 and head:
        cp = parse(head[0][3])
        boot = store.checkpoint_boot(dev, first_cp - 1)
        start = {"seq": cp.first, "cp": cp.cp, "prev_cp_hash": cp.prev_cp, "boot": cp.boot if boot is None else boot}
    header = {"dev": dev, "keys": keys, "start": start}
    counts = {"checkpoints": 0, "records": 0}

    def items():
        for cp_no, first, last, message in store.iter_checkpoints(dev, first_cp, last_cp):
            records = [data for _, data in store.record_bytes(dev, first, last)] if last >= first else []
            counts["checkpoints"] += 1
            counts["records"] += len(records)
            yield message, records

    write_export(out, header, items())
    return {"dev": dev, "first_cp": first_cp, "last_cp": last_cp, **counts}
