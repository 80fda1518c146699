"""Attacks below the app, on uvicorn's connections: WebSocket pings never read (with a token and
without one), request heads that never end. Memory must stay put and such sockets be dropped."""

from __future__ import annotations

import os
import socket
import time

from adversarial.conftest import TOKEN
from live_server import health, tree_rss_mib
from lipstream.bench.attack import raw_websocket
from lipstream.server.transport import HEADER_TIMEOUT_S, WRITE_STALL_S

PING_FLOOD_S = 4.0
MAX_GROWTH_MIB = 50


def ping_frame(payload: bytes = b"x" * 125) -> bytes:
    mask = os.urandom(4)
    return bytes([0x89, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def flood_pings(sock: socket.socket, seconds: float) -> int:
    """Send pings for `seconds` without reading anything; returns the bytes the kernel took."""
    sock.setblocking(False)
    frames, sent = ping_frame() * 64, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent += sock.send(frames)
        except BlockingIOError:
            time.sleep(0.01)  # the server stopped reading: its pongs are not being read either
        except OSError:
            break  # the server dropped us
    return sent


def dropped_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closes or resets the socket within `seconds` (we still read nothing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.send(ping_frame())
        except BlockingIOError:
            pass
        except OSError:
            return True
        time.sleep(0.2)
    return False


def test_unread_pings_do_not_grow_the_server(server):
    port = int(server.http.rsplit(":", 1)[1])
    before = tree_rss_mib(server.process.pid)
    with raw_websocket(port, TOKEN) as authorized, raw_websocket(port, None) as anonymous:
        sent = flood_pings(authorized, PING_FLOOD_S / 2) + flood_pings(anonymous, PING_FLOOD_S / 2)
        growth = tree_rss_mib(server.process.pid) - before
        assert growth < MAX_GROWTH_MIB, (growth, sent)
        assert health(server)["status"] == "ok"
        assert dropped_within(anonymous, 5)  # refused for its token: dropped at once
        assert dropped_within(authorized, WRITE_STALL_S + 10)  # reads nothing: dropped once stalled


def test_request_heads_that_never_end_are_closed(server):
    port = int(server.http.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 10) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert health(server)["status"] == "ok"  # others are still served meanwhile
        for sock in socks:  # each is closed by the server after HEADER_TIMEOUT_S
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in socks:
            sock.close()
