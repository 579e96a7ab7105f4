"""systemd's notify protocol (sd_notify(3)), without libsystemd: one datagram per message
to the ``NOTIFY_SOCKET`` Unix socket (a path, or ``@name`` for the abstract namespace).

    n = Notifier.from_env()       # None-safe: without NOTIFY_SOCKET every send is a no-op
    n.send("READY=1")
    n.watchdog_interval_s()       # WATCHDOG_USEC / 2 when systemd asked for pings, else None

Pure I/O shell, nothing else: what to send and when is decided in ``agent.watchdog``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("veritrail.sdnotify")


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> "Notifier":
        env = os.environ if env is None else env
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        owner = env.get("WATCHDOG_PID")  # set: the pings are for that process only
        if raw and raw.isdigit() and int(raw) > 0 and (not owner or owner == str(pid or os.getpid())):
            usec = int(raw)
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog period, as sd_watchdog_enabled(3) advises."""
        return None if not self.enabled or not self.watchdog_usec else self.watchdog_usec / 2e6

    def send(self, message: str) -> bool:
        """Send one notification; False (counted, logged once) if it could not go."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), target)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                log.warning("sd_notify to %s failed: %s", self.address, exc.strerror or type(exc).__name__)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
