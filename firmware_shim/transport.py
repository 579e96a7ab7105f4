"""Byte transport from the shim to the agent: a Unix socket or TCP, never blocking past
the timeout the caller gives.

    address "unix:/run/veritrail/agent.sock" | "tcp:192.168.4.1:7878" | ("host", port)

Every OSError is translated here into `TransportError` (connection unusable: close and
reconnect). A transport is any object with `connect(timeout_ms)`, `send(data, timeout_ms)
-> int`, `recv(timeout_ms) -> bytes` (b"" when nothing arrived in time) and `close()`;
tests inject their own.

Portable core: runs unchanged on CPython and MicroPython.
"""

import errno

try:
    import socket
except ImportError:  # older MicroPython ports; the WebAssembly port has no sockets at all
    try:
        import usocket as socket  # type: ignore[import-not-found, no-redef, unused-ignore]
    except ImportError:
        socket = None  # type: ignore[assignment]

import select

from firmware_shim import compat

__all__ = ["SocketTransport", "TransportError", "parse_address"]

_WOULD_BLOCK = (errno.EAGAIN, getattr(errno, "EWOULDBLOCK", errno.EAGAIN), errno.ETIMEDOUT)
_RECV_CHUNK = 65536


class TransportError(Exception):
    """The connection failed or was closed; `reason` is a short code for counters."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _reason(exc):
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return "refused"
    if code == errno.ENOENT:
        return "no_socket"
    if code in (errno.ECONNRESET, getattr(errno, "EPIPE", -1)):
        return "reset"
    if code in _WOULD_BLOCK or code == errno.EINPROGRESS:
        return "timeout"
    return "os_error"


def parse_address(address):
    """Return (family_name, target) for an address string or a (host, port) tuple."""
    if isinstance(address, tuple):
        return "tcp", address
    if not isinstance(address, str):
        raise ValueError("agent address must be a str or (host, port), got %s" % type(address).__name__)
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError("agent address %r has no socket path" % address)
        return "unix", path
    if address.startswith("tcp:"):
        host, sep, port = address[4:].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("agent address %r is not tcp:HOST:PORT" % address)
        return "tcp", (host, int(port))
    raise ValueError("agent address %r must start with unix: or tcp:" % address)


def _unix_target(path):
    """What connect() takes for a Unix socket path: the path itself on CPython; on
    MicroPython's Unix port (whose connect() takes a raw sockaddr and refuses a str with
    EINVAL) a struct sockaddr_un: native-endian sa_family, the path, a NUL."""
    if not compat.IS_MICROPYTHON:
        return path
    import struct

    return struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0"  # type: ignore[attr-defined, union-attr, unused-ignore]


def _no_delay(sock):
    """TCP_NODELAY: the shim batches frames itself, and Nagle's wait for the agent's delayed
    ACK (40 ms) would hold back a check() or the last records before the agent stops.
    MicroPython's Unix port names neither constant: Linux's numbers (6, 1) then."""
    try:
        sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
    except (OSError, AttributeError, TypeError):
        pass


def _is_timeout(exc):
    timeout_type = getattr(socket, "timeout", None) if socket is not None else None
    if timeout_type is not None and isinstance(exc, timeout_type):
        return True
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else getattr(exc, "errno", None)
    return code in _WOULD_BLOCK


class SocketTransport:
    def __init__(self, address):
        self.kind, self.target = parse_address(address)
        self._sock = None
        self._poll_in = None
        self._poll_out = None

    @property
    def connected(self):
        return self._sock is not None

    def connect(self, timeout_ms):
        self.close()
        if socket is None:
            raise TransportError("no_socket_module")
        try:
            if self.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # type: ignore[attr-defined]
                target = _unix_target(self.target)
            else:
                info = socket.getaddrinfo(self.target[0], self.target[1], 0, socket.SOCK_STREAM)[0]
                sock = socket.socket(info[0], socket.SOCK_STREAM)
                target = info[-1]
        except (OSError, AttributeError, IndexError) as exc:
            raise TransportError("resolve" if not isinstance(exc, OSError) else _reason(exc))
        try:
            sock.settimeout(max(timeout_ms, 1) / 1000)
            sock.connect(target)
            sock.settimeout(0)
            if self.kind == "tcp":
                _no_delay(sock)
        except OSError as exc:
            sock.close()
            raise TransportError("timeout" if _is_timeout(exc) else _reason(exc))
        self._sock = sock
        self._poll_in = select.poll()
        self._poll_in.register(sock, select.POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(sock, select.POLLOUT)

    def close(self):
        sock = self._sock
        self._sock = None
        self._poll_in = None
        self._poll_out = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _fail(self, exc):
        self.close()
        return TransportError(_reason(exc))

    def send(self, data, timeout_ms):
        """Send a prefix of `data`; return how many bytes went (0 if none within timeout)."""
        sock = self._sock
        if sock is None:
            raise TransportError("not_connected")
        try:
            return sock.send(data)
        except OSError as exc:
            if not _is_timeout(exc):
                raise self._fail(exc)
        if timeout_ms <= 0 or not self._poll_out.poll(timeout_ms):  # type: ignore[union-attr]
            return 0
        try:
            return sock.send(data)
        except OSError as exc:
            if _is_timeout(exc):
                return 0
            raise self._fail(exc)

    def recv(self, timeout_ms):
        """Bytes that arrived within `timeout_ms` (b"" if none); raises when the peer closed."""
        sock = self._sock
        if sock is None:
            raise TransportError("not_connected")
        # Poll first, also without waiting: a reply is rarely there yet, and a failed recv
        # costs an exception (several times a poll's price) on every check() while the agent works.
        if not self._poll_in.poll(max(timeout_ms, 0)):  # type: ignore[union-attr]
            return b""
        try:
            data = sock.recv(_RECV_CHUNK)
        except OSError as exc:
            if _is_timeout(exc):
                return b""
            raise self._fail(exc)
        if not data:
            self.close()
            raise TransportError("closed")
        return data
