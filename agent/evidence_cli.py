"""`veritrail verify-evidence FILE --trust ENROLLMENT | --pub HEX`: check an evidence bundle offline.

Prints every check, then what the bundle proves and what it does not. Exit status 0 only
when every signature and proof holds; 1 when a check fails; 2 for unusable input
(unreadable file, bad arguments, a bundle that is not a bundle). Needs only the device
install (agent.core); no collector dependencies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.errors import ExportMalformed, LogFormatError
from .core.evidence import decode
from .core.evidence_verify import Anchor, Report, Trust, verify_bundle
from .core.export import Trust as Enrollment
from .core.keys import ED25519, ES256, key_id
from .core.note import parse_vkey


def _pub(text: str) -> Anchor:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"--pub {text[:20]!r}: not hex") from None
    alg = {32: ED25519, 65: ES256}.get(len(raw))
    if alg is None:
        raise ValueError("--pub: 32 bytes (Ed25519) or 65 bytes (ES256, uncompressed point) expected")
    return Anchor(key_id(raw), alg, raw, None, "--pub")


def trust_from_args(args: argparse.Namespace) -> Trust:
    anchors, k0 = [], {}
    for path in args.trust or []:
        e = Enrollment.from_enrollment(json.loads(Path(path).read_text()))
        anchors += [Anchor(k.kid, k.alg, k.public, e.device_id, "enrollment file") for k in e.keys.values()]
        if e.fs_k0 is not None:
            k0[e.device_id] = e.fs_k0
    anchors += [_pub(p) for p in args.pub or []]
    log_key = parse_vkey(args.log_key) if args.log_key else None
    witnesses = tuple(parse_vkey(w) for w in args.witness or [])
    return Trust(tuple(anchors), k0, log_key, witnesses)


def print_report(report: Report, out=sys.stdout) -> None:
    print(("VERIFIED" if report.ok else "FAILED") + ": evidence bundle", file=out)
    for s in report.steps:
        print(f"  [{'ok' if s.ok else 'FAIL'}] {s.name}: {s.detail}", file=out)
    print("It proves:", file=out)
    for p in report.proves:
        print(f"  - {p}", file=out)
    print("It does not prove:", file=out)
    for p in report.does_not_prove:
        print(f"  - {p}", file=out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail verify-evidence", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="evidence bundle (GET /api/alerts/{id}/evidence)")
    parser.add_argument("--trust", action="append", metavar="ENROLLMENT",
                        help="a device's enrollment file (its keys and K_0); once per device")
    parser.add_argument("--pub", action="append", metavar="HEX", help="a trusted device public key, not bound to a device id")
    parser.add_argument("--log-key", metavar="VKEY", help="the collector log's verifier key (name+id+key); "
                        "without it the key in the bundle is used")
    parser.add_argument("--witness", action="append", metavar="VKEY", help="a witness whose cosignature is required")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.trust and not args.pub:
        parser.error("give --trust ENROLLMENT or --pub HEX: the device keys must come from outside the bundle")
    try:
        trust = trust_from_args(args)
        data = Path(args.file).read_bytes()
        decode(data)
    except (OSError, ValueError, ExportMalformed, LogFormatError) as exc:
        print(f"veritrail verify-evidence: {exc}", file=sys.stderr)
        return 2
    report = verify_bundle(data, trust)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        print_report(report)
    return 0 if report.ok else 1
