"""A real Mosquitto for tests: own config, free port, persistence on, stop/start on the same port.

    with Broker(tmp_path) as b:        # or the ``broker`` fixtures in tests/cloud_collector, tests/e2e
        b.port; b.stop(); b.start(); b.kill()

Never touches the system broker on 1883. Waits for the port with a deadline, no sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = os.environ.get("VERITRAIL_MOSQUITTO", "/usr/sbin/mosquitto")


# Started as root, Mosquitto drops to user "mosquitto", which cannot read the test's 0700
# temp dirs and then runs *without persistence*. Keep the test's own user.
_USER = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(cond, timeout_s: float = 15.0, what: str = "condition", interval_s: float = 0.02):
    """Async ``wait_for``: poll ``cond()`` on the running loop until truthy; TimeoutError names ``what``."""
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_for(condition, timeout_s: float = 10.0, what: str = "condition", interval_s: float = 0.02):
    """Poll ``condition()`` until truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    def __init__(self, directory: Path, *, extra_conf: str = "", port: int | None = None,
                 listener_conf: str | None = None, config_text: str | None = None) -> None:
        if not shutil.which(MOSQUITTO) and not os.path.exists(MOSQUITTO):
            raise RuntimeError(f"mosquitto not found at {MOSQUITTO}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        (self.dir / "data").mkdir(exist_ok=True)
        listener = listener_conf if listener_conf is not None else "allow_anonymous true\n"
        if config_text is not None:  # a complete config (e.g. deploy/mosquitto), port already in it
            self.conf.write_text(config_text + f"\nlog_dest file {self.log}\n{_USER}")
        else:
            self._write_default(listener, extra_conf)
        self.proc: subprocess.Popen | None = None

    def _write_default(self, listener: str, extra_conf: str) -> None:
        self.conf.write_text(
            f"per_listener_settings false\n"
            f"listener {self.port} 127.0.0.1\n{listener}"
            f"persistence true\npersistence_location {self.dir / 'data'}/\n"
            f"autosave_interval 1\nautosave_on_changes false\n"
            f"max_queued_messages 100000\nmax_inflight_messages 20\n"
            f"message_size_limit 262144\npersistent_client_expiration 1d\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\n{_USER}{extra_conf}"
        )

    def start(self, timeout_s: float = 10.0) -> "Broker":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or _port_open(self.port), timeout_s, "mosquitto port")
        except TimeoutError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err[-500:]}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Orderly stop (SIGTERM): Mosquitto writes its persistence file."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
