"""Limits below the ASGI app, in uvicorn's own connection protocols (h11 and websockets-sansio).

Two things an app cannot see happen there:
- **WebSocket pings** are answered by uvicorn as they are read, whatever the app does. A client
  that sends pings and never reads the pongs grew the server by 140-176 MiB in 10-20 s (also
  before it had shown a token). Here reading stops while the socket's write buffer holds over
  WRITE_BUFFER_BYTES (asyncio's `pause_writing`), so pongs are made only as fast as the client
  reads them, and a socket that stays undrained for `WRITE_STALL_S` is aborted; so is one closed
  (after a protocol error, say) with bytes its client never takes.
- **Request heads that never end**: uvicorn's h11 protocol times out idle keep-alive
  connections but not a request head that arrives slowly or stops half-way (200 such sockets
  were held for a whole test run). Here a head must be complete within `HEADER_TIMEOUT_S` of its
  first byte (or of the connection).

A `SendMeter` per WebSocket counts the bytes written to it and how many of them its client has
not yet taken (asyncio's buffer plus the kernel's send queue), for adaptive quality
(lipstream.server.adaptive); the app finds it in the ASGI scope's extensions under SEND_METER.

`ACCESS_LOG_FILTER` cuts `token=...` from uvicorn's access and WebSocket log lines.
"""

from __future__ import annotations

import logging
import re
import struct

try:  # Linux's SIOCOUTQ (= TIOCOUTQ): a socket's unsent and unacknowledged bytes
    import fcntl
    import termios

    _OUTQ = termios.TIOCOUTQ
except (ImportError, AttributeError):  # other systems: asyncio's buffer alone
    fcntl, _OUTQ = None, None

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

HEADER_TIMEOUT_S = 10.0
WRITE_STALL_S = 15.0
WRITE_BUFFER_BYTES = 2**20  # unsent bytes past which reading stops (and pongs with it)
POLICY_VIOLATION = 1008
POLICY_CLOSE_S = 1.0  # time for the close frame to leave before the socket is dropped
SEND_METER = "lipstream.send_meter"  # ASGI scope extension: the connection's SendMeter


class SendMeter:
    """Bytes written to one socket (`written`, WebSocket framing and compression included) and
    how many of them its peer has not taken yet (`queued()`); the difference it has taken."""

    def __init__(self, transport):
        self.transport = transport
        self.written = 0
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None and _OUTQ is not None else None

    def queued(self) -> int:
        """asyncio's unsent bytes plus the kernel's send queue (unsent or not yet acknowledged by
        the peer's TCP stack: Linux's SIOCOUTQ; elsewhere asyncio's buffer alone)."""
        queued = self.transport.get_write_buffer_size()
        if self._fd is not None:
            try:
                queued += struct.unpack("i", fcntl.ioctl(self._fd, _OUTQ, b"\0\0\0\0"))[0]
            except OSError:
                self._fd = None
        return queued


class _CountingTransport:
    """A transport that counts what is written through it into a SendMeter, and calls `on_close`
    after each `close()`."""

    def __init__(self, transport, meter: SendMeter, on_close):
        self._transport = transport
        self._meter = meter
        self._on_close = on_close

    def write(self, data) -> None:
        self._meter.written += len(data)
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()
        self._on_close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol that reads (and so answers pings) only while the client reads."""

    write_stall_s = WRITE_STALL_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # asyncio's default high-water mark (64 KiB) is less than one 512 px frame: reading would
        # pause at every frame. A client that lets a full megabyte wait is not reading.
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        self._stall_timer = None
        self.meter = SendMeter(transport)
        self.transport = _CountingTransport(transport, self.meter, self._closed_with_unsent_bytes)

    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None:
            self.scope["extensions"][SEND_METER] = self.meter

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.write_stall_s, self._abort_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall_timer()
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    async def send(self, message) -> None:
        await super().send(message)
        if message["type"] == "websocket.close" and message.get("code") == POLICY_VIOLATION and self.close_sent:
            # A client closed for what it sent (a flood, bad messages) gets no more reading: what it
            # queued before our close would otherwise be read and thrown away, possibly for seconds.
            self.transport.pause_reading()
            if self.close_timer is not None:
                self.close_timer.cancel()
            self.close_timer = self.loop.call_later(POLICY_CLOSE_S, self.transport.abort)

    async def receive(self):
        message = await super().receive()
        if not self.writable.is_set():  # the app read a message while the client reads none
            self.transport.pause_reading()
        return message

    def connection_lost(self, exc) -> None:
        self._cancel_stall_timer()
        super().connection_lost(exc)

    def _closed_with_unsent_bytes(self) -> None:
        """asyncio's close() waits for the write buffer to drain, forever if the client reads
        nothing (uvicorn closes so on a protocol error, a close handshake, a keep-alive timeout):
        such a socket is aborted after `write_stall_s` too, even below the buffer's high mark."""
        if self._stall_timer is None and self.transport.get_write_buffer_size() > 0:
            self._stall_timer = self.loop.call_later(self.write_stall_s, self._abort_stalled)

    def _abort_stalled(self) -> None:
        self._stall_timer = None
        self.logger.info("%s:%d - WebSocket closed: the client read nothing for %g s",
                         *(self.client or ("?", 0)), self.write_stall_s)
        self.transport.abort()  # close() would wait, forever, for the buffer to drain

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head isn't complete in time."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting_for_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting_for_head:
            self._cancel_head_timer()
        elif self._head_timer is None and self.conn.trailing_data[0]:  # a new head has begun
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Still ours (not upgraded to a WebSocket) and still waiting for a request head.
        if self.transport.get_protocol() is self and self.conn.their_state is h11.IDLE:
            self.transport.abort()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class _RedactToken(logging.Filter):
    """Replaces the value of any `token=` query parameter in a log record's arguments."""

    _TOKEN = re.compile(r"([?&]token=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


ACCESS_LOG_FILTER = _RedactToken()


def install_log_filter() -> None:
    """Cut tokens from uvicorn's access lines and its WebSocket lines (logged as `uvicorn.error`)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if ACCESS_LOG_FILTER not in logger.filters:
            logger.addFilter(ACCESS_LOG_FILTER)
