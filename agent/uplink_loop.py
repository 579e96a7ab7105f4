"""Drive a paho MQTT client from the running asyncio loop instead of paho's own thread.

``Uplink`` normally calls ``client.loop_start()``: one network thread per client, which
waits in ``select.select()``. That is right for the daemon (one uplink per process) but not
for a process hosting hundreds of agents (the simulator's fleets): ``select()`` cannot watch
a file descriptor >= 1024 (FD_SETSIZE), and paho swallows the resulting ``ValueError`` as
"connection lost" (``Client._loop``), so every client whose socket lands above fd 1023
opens a TCP connection, drops it before sending CONNECT, and retries forever. Hundreds of
network threads also compete for the GIL with the loop that does the agents' work.

``LoopNetwork`` uses paho's external-loop API instead (the approach of aiomqtt): the socket
is registered with the asyncio loop (epoll: no descriptor limit) through paho's
``on_socket_open/close/register_write/unregister_write`` callbacks, ``loop_read`` /
``loop_write`` run when it is readable / writable, ``loop_misc`` (keepalive pings) once a
``misc_interval_s``, and a reconnect follows a lost connection after the uplink's current
backoff delay, as paho's own thread would. Everything runs on the loop thread.

The TCP connect itself is paho's blocking ``reconnect()`` (bounded by the client's
``connect_timeout``, 5 s by default);
on a loop that must never block for long (remote brokers) keep the threaded default.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt


class LoopNetwork:
    """One paho client's network I/O on the running asyncio loop (see the module doc)."""

    def __init__(self, *, misc_interval_s: float = 1.0) -> None:
        if not misc_interval_s > 0:
            raise ValueError(f"misc_interval_s must be > 0, got {misc_interval_s!r}")
        self.misc_interval_s = misc_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._sock: Any = None
        self._closed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self.connect_attempts = 0
        self.connect_errors = 0

    # --- Uplink side ------------------------------------------------------------------
    def start(self, client: mqtt.Client, reconnect_delay_s: Callable[[], float]) -> None:
        """Take over ``client`` (after ``connect_async``) on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._client = client
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._task = self._loop.create_task(self._run(reconnect_delay_s), name="vt-uplink-net")

    async def stop(self, info: mqtt.MQTTMessageInfo | None, timeout_s: float = 2.0) -> None:
        """Wait (bounded) for ``info`` to be acknowledged, send DISCONNECT, release the socket."""
        client = self._client
        assert client is not None and self._loop is not None, "start() first"
        deadline = self._loop.time() + timeout_s
        while info is not None and not info.is_published() and self._sock is not None and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        self._closing = True
        if self._sock is not None:
            client.disconnect()           # queued; written by loop_write, which then closes the socket
            if self._sock is not None:
                client.loop_write()
            try:
                await asyncio.wait_for(self._closed.wait(), max(0.0, deadline - self._loop.time()) + 0.5)
            except TimeoutError:
                pass
        if self._sock is not None:        # the broker never took the DISCONNECT: drop the socket
            self._forget(self._sock)
            self._sock.close()
            self._sock = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- the loop's side ----------------------------------------------------------------
    async def _run(self, reconnect_delay_s: Callable[[], float]) -> None:
        client = self._client
        assert client is not None
        first = True
        while not self._closing:
            if self._sock is None:
                if not first:
                    await asyncio.sleep(reconnect_delay_s())
                    if self._closing:
                        break
                first = False
                self._connect(client)
                continue
            self._closed.clear()
            try:
                await asyncio.wait_for(self._closed.wait(), self.misc_interval_s)
            except TimeoutError:
                pass
            if self._sock is not None and not self._closing:
                client.loop_misc()

    def _connect(self, client: mqtt.Client) -> None:
        self.connect_attempts += 1
        try:
            client.reconnect()
        except (OSError, ssl.SSLError):
            self.connect_errors += 1
            callback = client.on_connect_fail
            if callback is not None:
                callback(client, client.user_data_get())

    def _on_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        self._closed.clear()
        self._loop.add_reader(sock, self._readable)

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._forget(sock)
        if sock is self._sock:
            self._sock = None
        self._closed.set()

    def _forget(self, sock: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        except (ValueError, OSError):
            pass     # already closed: nothing registered any more

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    def _readable(self) -> None:
        client = self._client
        if client is None or self._sock is None:
            return
        client.loop_read()
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending() and self._loop is not None:
            self._loop.call_soon(self._readable)   # decrypted bytes waiting: epoll will not say so

    def _writable(self) -> None:
        if self._client is not None and self._sock is not None:
            self._client.loop_write()
