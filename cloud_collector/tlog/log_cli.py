"""`veritrail log verify | key | cosign`: follow the collector's transparency log.

    veritrail log key --config collector.toml           print the log's verifier key (for auditors)
    veritrail log verify URL --state DIR [--log-key VKEY] [--full] [--bundle FILE] [--token T]
    veritrail log cosign --config collector.toml --witness URL --witness-key VKEY

`verify` exits 0 when the log's checkpoint verifies and extends the one saved in DIR (and
every --bundle checkpoint is included), 1 when it does not (rolled back, forked, rewritten,
bad entries: sizes in the message), 2 for unusable input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from agent.core import tlog
from agent.core.checkpoint import parse
from agent.core.errors import CheckpointMalformed, LogFormatError
from agent.core.evidence import decode
from agent.core.note import parse_vkey

from .audit import Auditor, Fetcher, FetchError


def _bundle_entries(path: str) -> list[tuple[int, bytes]]:
    """(leaf index, entry) of every logged checkpoint in an evidence bundle."""
    out = []
    for d in decode(Path(path).read_bytes()).devices:
        for c in d.checkpoints:
            if c.log is not None:
                cp = parse(c.cose)
                out.append((c.log.index, tlog.encode_entry(d.dev, cp.cp, hashlib.sha256(c.cose).digest(),
                                                           c.log.received_ms)))
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        key = parse_vkey(args.log_key) if args.log_key else None
        include = [e for b in args.bundle or [] for e in _bundle_entries(b)]
        auditor = Auditor(Fetcher(args.url, args.token or os.environ.get("VERITRAIL_TOKEN")), args.state, key)
        result = auditor.check(full=args.full, include=include)
    except (OSError, ValueError, LogFormatError, CheckpointMalformed, FetchError) as exc:
        print(f"veritrail log verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), sort_keys=True))
    else:
        print(f"{'OK' if result.ok else 'FAILED'} [{result.status}]: {result.detail}")
        for i in result.included:
            print(f"  leaf {i['index']}: {'included' if i['included'] else 'NOT included'}")
    return 0 if result.ok else 1


def _collector(config_path: str):
    from ..config import CollectorConfig, load_key
    from . import log_signer
    config = CollectorConfig.load(config_path)
    return config, log_signer(load_key(config.key_file))


def cmd_key(args: argparse.Namespace) -> int:
    _, signer = _collector(args.config)
    print(signer.verifier.vkey())
    return 0


def cmd_cosign(args: argparse.Namespace) -> int:
    from ..store import open_store
    from .witness import WitnessError, request_cosignature
    config, _ = _collector(args.config)
    store = open_store(config.store)
    try:
        size = request_cosignature(store, args.witness, parse_vkey(args.witness_key), now_ms=int(time.time() * 1000))
    except WitnessError as exc:
        print(f"veritrail log cosign: witness refused ({exc.status}): {exc.reason}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"cosigned_size": size, "witness": args.witness_key}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail log", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("verify", help="check the log is consistent with the checkpoint saved before")
    p.add_argument("url", help="the log's prefix, e.g. http://collector:8080/log")
    p.add_argument("--state", required=True, help="directory holding the checkpoint seen last")
    p.add_argument("--log-key", help="the log's verifier key (needed on the first run)")
    p.add_argument("--token", help="API token (or VERITRAIL_TOKEN)")
    p.add_argument("--full", action="store_true", help="check every entry, not only the new ones")
    p.add_argument("--bundle", action="append", help="an evidence bundle whose checkpoints must be in the log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("key", help="print the log's verifier key")
    p.add_argument("--config", default=os.environ.get("VERITRAIL_COLLECTOR_CONFIG", "collector.toml"))
    p.set_defaults(fn=cmd_key)
    p = sub.add_parser("cosign", help="ask a witness to cosign the latest checkpoint (c2sp.org/tlog-witness)")
    p.add_argument("--config", default=os.environ.get("VERITRAIL_COLLECTOR_CONFIG", "collector.toml"))
    p.add_argument("--witness", required=True, help="the witness's URL prefix")
    p.add_argument("--witness-key", required=True, help="the witness's verifier key")
    p.set_defaults(fn=cmd_cosign)
    args = parser.parse_args(argv)
    return args.fn(args)
