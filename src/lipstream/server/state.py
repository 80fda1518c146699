"""The server's settings and the state its handlers share (worker pool, metrics, sessions)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from lipstream.avatar.media import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_S, MediaLimits
from lipstream.server.jobs import DEFAULT_JOB_TIMEOUT_S
from lipstream.server.metrics import Metrics
from lipstream.session.clock import Clock, RealClock
from lipstream.store import DEFAULT_CACHE_MIB
from lipstream.stream.pool import WorkerPool

DEFAULT_MAX_SESSIONS = 8
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20
DEFAULT_MAX_AUDIO_S = 600.0  # an audio upload to render
DEFAULT_MAX_AUDIO_RATE = 4.0
DEFAULT_WEBRTC_CONNECT_TIMEOUT_S = 20.0


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
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # a photo or a video frame, from its header
    max_video_s: float = DEFAULT_MAX_VIDEO_S  # a video avatar, from its header and packets
    max_audio_s: float = DEFAULT_MAX_AUDIO_S  # audio to render, from its header and while decoding
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    max_audio_rate: float = DEFAULT_MAX_AUDIO_RATE  # audio a session may send, x real time
    avatar_store: str | None = None  # a URI prefix (s3://bucket/avatars): names are read from there, not avatars_dir
    avatar_cache_mib: float = DEFAULT_CACHE_MIB  # avatars each worker holds in memory
    webrtc_connect_timeout_s: float = DEFAULT_WEBRTC_CONNECT_TIMEOUT_S  # an answered peer not connected by then is closed
    ice_servers: tuple[str, ...] = ()  # WebRTC: STUN/TURN URLs (URL or URL,USERNAME,CREDENTIAL); none by default

    @property
    def media_limits(self) -> MediaLimits:
        return MediaLimits(self.max_image_pixels, self.max_video_s)

    def ice_server_list(self) -> list[dict]:
        """ice_servers as RTCIceServer dicts ({"urls", "username", "credential"}), for aiortc and browsers."""
        servers = []
        for entry in self.ice_servers:
            url, *auth = entry.split(",", 2)
            servers.append({"urls": url, **({"username": auth[0], "credential": auth[1]} if len(auth) == 2 else {})})
        return servers

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
