"""`veritrail agent init|run|status|export`.

    veritrail agent init --device-id ID [--dir DIR] [--alg Ed25519|ES256] [--force] [--enroll-out PATH]
    veritrail agent run --config FILE
    veritrail agent status --config FILE [--json]
    veritrail agent export --config FILE -o OUT
    veritrail agent install-service [--user veritrail] [--dir /var/lib/veritrail]   (agent/service_unit.py)
    veritrail agent wheelhouse --out DIR [--target aarch64 --target armv7l]      (agent/wheelhouse.py)

Exit status: 0 fine, 1 the operation failed, 2 bad usage or missing set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

from .config import from_mapping, load, render
from .core.errors import KeyStoreError
from .core.export import enrollment_doc, write_export
from .errors import AgentError
from .keystore import FileKeyStore
from .service_unit import add_parser as add_service_parser, cmd_install_service
from .spool import Spool
from .wheelhouse import add_parser as add_wheelhouse_parser, cmd_wheelhouse


@dataclass(frozen=True, slots=True)
class InitPaths:
    config: Path
    key_dir: Path
    state_dir: Path
    enrollment: Path


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def init_agent(*, device_id: str, directory: Path | str, alg: str = "Ed25519", force: bool = False,
               enroll_out: Path | str | None = None, quiet: bool = False,
               device_class: str = "charger") -> InitPaths:
    """Keys, config, state dir and enrollment file. Refuses to replace keys unless ``force``."""
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = InitPaths(d / "agent.toml", d / "keys", d / "state",
                      Path(enroll_out).resolve() if enroll_out else d / "enroll.json")
    text = render(device_id=device_id, state_dir="state", key_dir="keys", device_class=device_class)
    from_mapping(tomllib.loads(text), base_dir=d, env={})  # validates device_id before anything is written
    store = FileKeyStore.create(paths.key_dir, alg=alg, force=force)  # raises if keys exist
    paths.state_dir.mkdir(exist_ok=True, mode=0o700)
    spool = paths.state_dir / "spool.db"
    if spool.exists():  # a new key and K_0 start a new chain; keep the old one for forensics
        aside = spool.with_name(f"spool.db.replaced-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            old = Path(str(spool) + suffix)
            if old.exists():
                old.rename(str(aside) + suffix)
    if force or not paths.config.exists():
        _write_private(paths.config, text.encode(), force=True)
    signer = store.signer()
    slot = store.fs_load()
    if slot is None:
        raise KeyStoreError("no K_0 after key creation")
    doc = enrollment_doc(device_id, [(signer.kid, signer.alg, signer.public_bytes())], slot[1])
    _write_private(paths.enrollment, (json.dumps(doc, indent=2) + "\n").encode(), force=force)
    if not quiet:
        print(f"device {device_id}: key {signer.kid} ({signer.alg}) in {paths.key_dir}")
        print(f"config:     {paths.config}")
        print(f"state dir:  {paths.state_dir}")
        print(f"ENROLLMENT: {paths.enrollment}")
        print("  It holds the forward-secure key K_0: copy it to the collector "
              "(enroll the device there), then DELETE it from this device.")
        print(f"start with: veritrail agent run --config {paths.config}")
    return paths


def _cmd_init(args: argparse.Namespace) -> int:
    try:
        init_agent(device_id=args.device_id, directory=args.dir, alg=args.alg, force=args.force,
                   enroll_out=args.enroll_out, device_class=args.device_class)
    except FileExistsError as exc:
        print(f"veritrail agent init: {exc.filename} exists; use --force to replace it", file=sys.stderr)
        return 1
    except KeyStoreError as exc:
        print(f"veritrail agent init: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if "MALLOC_ARENA_MAX" not in os.environ:
        # glibc gives the spool's writer thread its own malloc arena: ~0.6 MiB of RSS for
        # nothing on a device. The setting is read at process start, so start again with it
        # (same pid; a supervisor that sets MALLOC_ARENA_MAX itself skips this).
        os.environ["MALLOC_ARENA_MAX"] = "1"
        try:
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        except OSError as exc:
            print(f"veritrail agent run: not restarted with MALLOC_ARENA_MAX=1 ({exc.strerror})", file=sys.stderr)
    from .daemon import run
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load(args.config)
    return asyncio.run(run(config))


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import gather, render as render_status
    doc = gather(load(args.config))
    print(json.dumps(doc, sort_keys=True, default=_jsonable) if args.json else render_status(doc))
    return 0


def _jsonable(obj: object) -> object:
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    raise TypeError(type(obj).__name__)


def _cmd_export(args: argparse.Namespace) -> int:
    config = load(args.config)
    signer = FileKeyStore(config.key_dir).signer()
    spool = Spool(config.spool_path, max_bytes=config.spool.max_bytes, readonly=True)
    skipped = []

    def items():
        for block in spool.iter_blocks():
            if block.damaged:
                skipped.append(block.cp)
                continue
            yield block.message, block.records

    header = {"dev": config.device_id, "keys": [{"kid": signer.kid, "alg": signer.alg, "pub": signer.public_bytes()}],
              "start": spool.start()}
    tmp = Path(str(args.output) + ".tmp")
    try:
        with open(tmp, "wb") as out:
            n = write_export(out, header, items())
        os.replace(tmp, args.output)
    finally:
        spool.close()
        tmp.unlink(missing_ok=True)
    print(f"exported {n} checkpoints to {args.output}"
          + (f"; skipped {len(skipped)} damaged: {skipped[:10]}" if skipped else ""))
    return 0 if not skipped else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail agent", description="the on-device agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="create keys, config, state dir and the enrollment file")
    p.add_argument("--device-id", required=True)
    p.add_argument("--dir", default=".", help="folder for agent.toml, keys/ and state/ (default: .)")
    p.add_argument("--alg", choices=("Ed25519", "ES256"), default="Ed25519")
    p.add_argument("--device-class", choices=("charger", "tcu"), default="charger",
                   help="which default rule packs judge its commands (default: charger)")
    p.add_argument("--force", action="store_true", help="replace existing keys (starts a new chain)")
    p.add_argument("--enroll-out", metavar="PATH", help="where to write the enrollment file (default DIR/enroll.json)")
    p = sub.add_parser("run", help="run the daemon (SIGTERM/SIGINT: clean stop)")
    p.add_argument("--config", required=True)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p = sub.add_parser("status", help="seq, boot, spool, drops, evictions, receipts, uplink")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("export", help="write the spool as a veritrail-export/1 file")
    p.add_argument("--config", required=True)
    p.add_argument("-o", "--output", required=True)
    add_service_parser(sub)
    add_wheelhouse_parser(sub)
    args = parser.parse_args(argv)
    handler = {"init": _cmd_init, "run": _cmd_run, "status": _cmd_status, "export": _cmd_export,
               "install-service": cmd_install_service, "wheelhouse": cmd_wheelhouse}[args.cmd]
    try:
        return handler(args)
    except (AgentError, KeyStoreError) as exc:
        print(f"veritrail agent {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
