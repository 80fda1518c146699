"""Limits on what a client may send: HTTP bodies (enforced while they stream in, not trusting
Content-Length) and rates of WebSocket messages (token buckets on an injectable clock)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


class TokenBucket:
    """Allows `rate` units per second on average and bursts of up to `burst` units.

    `clock` gives seconds (monotonic); tests pass their own.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.level = burst
        self._stamp = clock()

    def take(self, amount: float = 1.0) -> bool:
        """Take `amount` if the bucket holds it; False (taking nothing) if not."""
        self._refill()
        if self.level < amount:
            return False
        self.level -= amount
        return True

    def charge(self, amount: float) -> float:
        """Take `amount` even if that overdraws the bucket; returns the seconds to wait before the
        next use so that the average stays at `rate` (0 if not overdrawn)."""
        self._refill()
        self.level -= amount
        return max(0.0, -self.level / self.rate)

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self._stamp) * self.rate)
        self._stamp = now


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware answering 413 to any HTTP request whose body exceeds `max_bytes`."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        received = 0
        exceeded = started = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            # A handler may turn the failed read into its own error (FastAPI answers 400 to any
            # body it can't parse): once the limit is hit, the answer is 413 whatever it says.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps({"error": "TooLarge", "message": f"the request body is over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
