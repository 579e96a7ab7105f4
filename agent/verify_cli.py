"""`veritrail verify FILE --trust ENROLLMENT`: check an exported stream offline.

Exit status 0 only when everything verifies; 1 when the chain does not verify; 2 for
unusable input (unreadable file, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.errors import ExportMalformed
from .core.export import Trust, read_export, verify_stream
from .core.keys import key_id
from .core.verify import KeyInfo


def _trust(header: dict, trust_path: str | None) -> tuple[Trust, bool]:
    if trust_path:
        return Trust.from_enrollment(json.loads(Path(trust_path).read_text())), True
    keys = {}
    for k in header.get("keys") or []:
        try:
            pub = bytes(k["pub"])
            keys[key_id(pub)] = KeyInfo(key_id(pub), str(k["alg"]), pub)
        except (KeyError, TypeError, ValueError):
            raise ExportMalformed("bad key in header") from None
    return Trust(header["dev"], keys, None), False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail verify", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="exported stream (veritrail agent export, or the collector's export)")
    parser.add_argument("--trust", metavar="ENROLLMENT",
                        help="the device's enrollment file (public keys and K_0); without it the "
                             "keys in the file itself are used, which proves integrity, not origin")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        with open(args.file, "rb") as fh:
            header, items = read_export(fh)
        trust, trusted = _trust(header, args.trust)
    except (OSError, ValueError, ExportMalformed) as exc:
        print(f"veritrail verify: {exc}", file=sys.stderr)
        return 2
    if trust.device_id != header["dev"]:
        print(f"veritrail verify: export is for {header['dev']!r}, trust file for {trust.device_id!r}",
              file=sys.stderr)
        return 2
    try:
        report = verify_stream(trust, items, header.get("start"))
    except ExportMalformed as exc:
        print(f"veritrail verify: {exc}", file=sys.stderr)
        return 2
    doc = report.as_dict() | {"keys_trusted": trusted}
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        status = "VERIFIED" if report.ok else "FAILED"
        print(f"{status}: device {report.device_id}")
        print(f"  checkpoints {report.checkpoints} (cp {report.first_cp}..{report.last_cp}), "
              f"records {report.records} (seq {report.first_seq}..{report.last_seq})")
        for b in report.bridges:
            print(f"  eviction bridged: seq {b['from_seq']}..{b['to_seq']} (cp {b['from_cp']}..{b['to_cp']}), "
                  "signed by the device")
        if not report.fs_checked:
            print("  forward-secure tags not checked (no K_0: pass --trust ENROLLMENT)")
        if not trusted:
            print("  keys taken from the file itself: proves integrity, not origin (pass --trust)")
        if report.error is not None:
            print(f"  error [{doc['error']['code']}]: {report.error}")
    return 0 if report.ok else 1
