"""`veritrail witness init | run`: a witness with its own key (c2sp.org/tlog-witness).

    veritrail witness init --dir D --name witness.example/w1     key (0600) and D/witness.vkey
    veritrail witness run --dir D --log VKEY [--log VKEY] [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from agent.core.errors import LogFormatError
from agent.core.note import parse_vkey

from .witness import Witness


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail witness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="create the witness's key")
    p.add_argument("--dir", required=True)
    p.add_argument("--name", required=True, help="the witness's name, e.g. witness.example/w1")
    p = sub.add_parser("run", help="serve POST /add-checkpoint")
    p.add_argument("--dir", required=True)
    p.add_argument("--log", action="append", required=True, help="verifier key of a log to witness")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "init":
            print(Witness.init(args.dir, args.name).vkey())
            return 0
        witness = Witness(args.dir, [parse_vkey(v) for v in args.log])
    except (OSError, ValueError, KeyError, LogFormatError) as exc:
        print(f"veritrail witness: {exc}", file=sys.stderr)
        return 2
    server = witness.serve(args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="witness-http", daemon=True)
    thread.start()
    print(f"witness {witness.signer.name} on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    return 0
