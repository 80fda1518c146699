"""A slow link on loopback: a TCP relay that carries a server's bytes to its client at a set rate.

    async with ThrottledLink(8000, bytes_per_s=300_000 / 8) as link:
        async with websockets.connect(f"ws://127.0.0.1:{link.port}/ws") as ws: ...

The relay reads the server's side through a socket with a small receive buffer
(UPSTREAM_RCVBUF_BYTES) only as fast as the rate allows, so what the link can't carry waits in
the server's own socket (where a real bottleneck's queue shows to the sender), not in buffers on
the client's side that would hide it. The client's bytes go to the server unthrottled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

UPSTREAM_RCVBUF_BYTES = 4096  # Linux doubles it; TCP's window follows it
SEGMENT_BYTES = 1448  # one TCP segment's payload on an Ethernet path
BURST_S = 0.02  # credit a link that was idle may use at once


class ThrottledLink:
    """Relays connections to 127.0.0.1:`target_port` from its own `port` (see the module docstring)."""

    def __init__(self, target_port: int, bytes_per_s: float):
        self.target_port = target_port
        self.bytes_per_s = bytes_per_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> ThrottledLink:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        upstream = socket.socket()
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_RCVBUF_BYTES)
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, ("127.0.0.1", self.target_port))
            tasks = {asyncio.create_task(self._to_server(reader, upstream)),
                     asyncio.create_task(self._to_client(upstream, writer))}
            self._tasks |= tasks
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            self._tasks -= tasks
        finally:
            upstream.close()
            writer.close()

    async def _to_server(self, reader: asyncio.StreamReader, upstream: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while data := await reader.read(65536):
            await loop.sock_sendall(upstream, data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    async def _to_client(self, upstream: socket.socket, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        next_s = time.monotonic()
        while True:
            try:
                data = await loop.sock_recv(upstream, SEGMENT_BYTES)
            except OSError:
                return
            if not data:
                writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            next_s = max(next_s, time.monotonic() - BURST_S) + len(data) / self.bytes_per_s
            await asyncio.sleep(max(0.0, next_s - time.monotonic()))
