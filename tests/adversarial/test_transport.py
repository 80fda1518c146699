"""Attacks below the app, on uvicorn's connections: WebSocket pings never read (with a token and
without one), request heads that never end. Memory must stay put and such sockets be dropped."""

from __future__ import annotations

import socket

from adversarial.conftest import TOKEN
from live_server import health, tree_rss_mib
from lipstream.bench.attack import flood_pings, ping_frames, raw_websocket, time_to_drop
from lipstream.server.transport import HEADER_TIMEOUT_S, WRITE_STALL_S

PING_FLOOD_MAX_S = 60.0
MAX_GROWTH_MIB = 50


def test_unread_pings_do_not_grow_the_server(server):
    port = int(server.http.rsplit(":", 1)[1])
    before = tree_rss_mib(server.process.pid)
    with raw_websocket(port, TOKEN) as authorized, raw_websocket(port, None) as anonymous:
        authorized.setblocking(False), anonymous.setblocking(False)
        flooded = flood_pings(authorized, PING_FLOOD_MAX_S)
        assert flooded["server_stopped_reading"], flooded  # pongs unread: the server reads no more pings
        flood_pings(anonymous, PING_FLOOD_MAX_S)
        growth = tree_rss_mib(server.process.pid) - before
        assert growth < MAX_GROWTH_MIB, (growth, flooded)
        assert health(server)["status"] == "ok"
        assert time_to_drop(anonymous, 5) is not None  # refused for its token: dropped at once
        assert time_to_drop(authorized, WRITE_STALL_S + 10) is not None  # stalled: dropped


def test_a_client_that_breaks_the_protocol_and_reads_nothing_is_dropped(server):
    # Pongs the kernel's buffers cannot all take (the client's is capped at 4 KiB), yet less than
    # the megabyte at which the server stops reading; then an unmasked frame. The server closes
    # for the protocol error, and its close used to wait forever for the unread pongs to leave.
    port = int(server.http.rsplit(":", 1)[1])
    with raw_websocket(port, TOKEN, receive_buffer=4096) as sock:
        sock.sendall(ping_frames(24_000) + b"\x89\x00")  # 24,000 pings of 131 bytes: 3.1 MB
        sock.setblocking(False)
        assert time_to_drop(sock, WRITE_STALL_S + 10) is not None


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
