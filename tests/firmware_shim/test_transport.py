"""SocketTransport over a real Unix socket: recv gives what arrived or b"" in time, and a
closed peer is an error, whether recv waits or not."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_shim.transport import SocketTransport, TransportError


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[SocketTransport, socket.socket]]:
    path = tmp_path / "t.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    transport = SocketTransport(f"unix:{path}")
    transport.connect(1000)
    peer, _ = listener.accept()
    listener.close()
    yield transport, peer
    transport.close()
    peer.close()


@pytest.mark.parametrize("timeout_ms", [0, 30])
def test_recv_gives_empty_bytes_when_nothing_arrives_in_time(pair, timeout_ms) -> None:
    transport, _ = pair
    started = time.monotonic()
    assert transport.recv(timeout_ms) == b""
    assert time.monotonic() - started >= timeout_ms / 1000 * 0.9
    assert transport.connected


@pytest.mark.parametrize("timeout_ms", [0, 5000])
def test_recv_gives_bytes_already_there_without_waiting(pair, timeout_ms) -> None:
    transport, peer = pair
    peer.sendall(b"verdict")
    started = time.monotonic()
    assert transport.recv(timeout_ms) == b"verdict"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("timeout_ms", [0, 5000])
def test_recv_raises_closed_when_the_peer_went_away(pair, timeout_ms) -> None:
    transport, peer = pair
    peer.sendall(b"last")
    peer.close()
    assert transport.recv(timeout_ms) == b"last"
    with pytest.raises(TransportError) as info:
        transport.recv(timeout_ms)
    assert info.value.reason == "closed"
    assert not transport.connected
    with pytest.raises(TransportError) as info:
        transport.recv(timeout_ms)
    assert info.value.reason == "not_connected"
