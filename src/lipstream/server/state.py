"""The server's settings and the state its handlers share (worker pool, metrics, sessions)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from lipstream.server.metrics import Metrics
from lipstream.session.clock import Clock, RealClock
from lipstream.stream.pool import WorkerPool

DEFAULT_MAX_SESSIONS = 8
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20


@dataclass
class ServerSettings:
    """How `lipstream serve` runs; None for avatars_dir means only the bundled `default`."""

    avatars_dir: Path | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    token: str | None = None
    renderer: str = "auto"  # used when neither the client nor the preset names one
    workers: int | None = None  # worker processes; None = one per CPU core
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES

    def token_ok(self, given: str | None) -> bool:
        """True if no token is configured or `given` matches it (constant-time)."""
        if not self.token:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


@dataclass
class ServerState:
    settings: ServerSettings
    pool: WorkerPool
    metrics: Metrics = field(default_factory=Metrics)
    sessions: dict = field(default_factory=dict)  # session id -> Connection
    clock: Clock = field(default_factory=RealClock)  # arrival times, deadlines, latencies (a fake one in tests)
