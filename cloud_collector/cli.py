"""`veritrail collector init | run | enroll | revoke | devices`."""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from agent.core.errors import ExportMalformed
from agent.core.export import Trust

from .config import CollectorConfig, create_key, load_key
from .errors import CollectorError
from .store import open_store

CONFIG_TEMPLATE = """\
[collector]
store = "collector.db"
key_file = "collector.key"
mqtt_host = "{host}"
mqtt_port = {port}
client_id = "vt-collector"
workers = 1
api_port = {api_port}
# TLS (production): tls_ca_file, tls_cert_file, tls_key_file
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def cmd_init(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    conf, key = d / "collector.toml", d / "collector.key"
    if conf.exists() or key.exists():
        print(f"veritrail collector init: {d} already holds a collector config or key", file=sys.stderr)
        return 1
    signer = create_key(key, args.alg)
    conf.write_text(CONFIG_TEMPLATE.format(host=args.mqtt_host, port=args.mqtt_port, api_port=args.api_port))
    pub = {"alg": signer.alg, "kid": signer.kid, "public_key": signer.public_bytes().hex()}
    (d / "collector.pub.json").write_text(json.dumps(pub, indent=1) + "\n")
    print(json.dumps({"config": str(conf), **pub}))
    print(f"collector key {signer.kid} ({signer.alg}); config {conf}\n"
          f"next: on every device, set [uplink] collector_public_key = \"{pub['public_key']}\"\n"
          f"      enroll each device: veritrail collector enroll --config {conf} --file enroll.json\n"
          f"      run: veritrail collector run --config {conf}", file=sys.stderr)
    return 0


def _store(args: argparse.Namespace):
    return open_store(CollectorConfig.load(args.config).store)


def cmd_enroll(args: argparse.Namespace) -> int:
    try:
        trust = Trust.from_enrollment(json.loads(Path(args.file).read_text()))
    except (OSError, ValueError) as exc:
        print(f"veritrail collector enroll: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    store = _store(args)
    store.enroll(trust, _now_ms(), replace=args.replace)
    print(json.dumps({"enrolled": trust.device_id, "kids": sorted(trust.keys), "fs": trust.fs_k0 is not None}))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    devs = _store(args).revoke(args.kid, args.from_cp, _now_ms(), args.device)
    print(json.dumps({"revoked": args.kid, "from_cp": args.from_cp, "devices": devs}))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    for d in _store(args).devices():
        print(json.dumps(d, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_device
    store = _store(args)
    with open(args.output, "wb") as out:
        summary = export_device(store, args.dev, out, args.from_seq, args.to_seq)
    print(json.dumps({"output": args.output, **summary}))
    return 0


def _worker(config: CollectorConfig, index: int, stop: threading.Event) -> None:
    from .ingest import Collector
    store = open_store(config.store)
    try:
        Collector(config, store, load_key(config.key_file), worker=index).run(stop)
    finally:
        store.close()


def _log_integrator(config: CollectorConfig, stop: threading.Event) -> None:
    """The transparency log's batch integration (one per collector host; see tlog/log.py)."""
    from .tlog import LogIntegrator, TransparencyLog, log_signer
    store = open_store(config.store)
    try:
        LogIntegrator(TransparencyLog(store, log_signer(load_key(config.key_file)))).run(stop)
    finally:
        store.close()


def _process_worker(config: CollectorConfig, index: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _worker(config, index, stop)


def cmd_run(args: argparse.Namespace) -> int:
    config = CollectorConfig.load(args.config)
    load_key(config.key_file)  # fail early on a bad key
    open_store(config.store).close()  # create the schema once, before workers race for it
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads: list[threading.Thread] = []
    procs: list[multiprocessing.process.BaseProcess] = []
    threads.append(threading.Thread(target=_log_integrator, args=(config, stop), name="collector-tlog"))
    if config.workers == 1:
        threads.append(threading.Thread(target=_worker, args=(config, 0, stop), name="collector-ingest"))
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_process_worker, args=(config, i), name=f"collector-{i}") for i in range(config.workers)]
    for t in threads:
        t.start()
    for p in procs:
        p.start()
    logging.getLogger("veritrail.collector").info("collector running: %d worker(s)", config.workers)
    if config.api_port:
        import uvicorn
        from .api import create_app
        server = uvicorn.Server(uvicorn.Config(create_app(lambda: open_store(config.store)), host=config.api_host,
                                               port=config.api_port, log_level="warning"))
        server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # our handlers set `stop`
        api = threading.Thread(target=server.run, name="collector-api", daemon=True)
        api.start()
        stop.wait()
        server.should_exit = True
        api.join(10)
    else:
        stop.wait()
    for p in procs:
        p.terminate()
    for t in threads:
        t.join(30)
    for p in procs:
        p.join(30)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail collector")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="create the collector's key and config")
    p.add_argument("--dir", default=".")
    p.add_argument("--alg", default="Ed25519")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--api-port", type=int, default=8080)
    p.set_defaults(fn=cmd_init)
    p = sub.add_parser("run", help="subscribe, verify, store, send receipts")
    p.add_argument("--config", required=True)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("enroll", help="register a device from the file `veritrail agent init` wrote")
    p.add_argument("--config", default=os.environ.get("VERITRAIL_COLLECTOR_CONFIG", "collector.toml"))
    p.add_argument("--file", required=True)
    p.add_argument("--replace", action="store_true", help="re-enroll: forget the device's stored chain")
    p.set_defaults(fn=cmd_enroll)
    p = sub.add_parser("revoke", help="distrust a key id from a checkpoint number on")
    p.add_argument("--config", default=os.environ.get("VERITRAIL_COLLECTOR_CONFIG", "collector.toml"))
    p.add_argument("kid")
    p.add_argument("--from-cp", type=int, required=True)
    p.add_argument("--device")
    p.set_defaults(fn=cmd_revoke)
    p = sub.add_parser("devices", help="list enrolled devices")
    p.add_argument("--config", default=os.environ.get("VERITRAIL_COLLECTOR_CONFIG", "collector.toml"))
    p.set_defaults(fn=cmd_devices)
    p = sub.add_parser("export", help="write a device's stored chain for `veritrail verify`")
    p.add_argument("--config", default=os.environ.get("VERITRAIL_COLLECTOR_CONFIG", "collector.toml"))
    p.add_argument("dev")
    p.add_argument("--from-seq", type=int)
    p.add_argument("--to-seq", type=int)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=cmd_export)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("VERITRAIL_LOG", "INFO"), format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    try:
        return args.fn(args)
    except (CollectorError, ExportMalformed) as exc:
        print(f"veritrail collector {args.cmd}: {exc}", file=sys.stderr)
        return 1
