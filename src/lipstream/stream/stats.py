"""Per-session statistics: frames sent and dropped, added latency, renderer changes."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lipstream.audio.quality import AudioQuality

LATENCY_WINDOW_FRAMES = 4096  # latency percentiles are over the most recent frames


@dataclass
class SessionStats:
    """Counters of one session; `snapshot()` is what clients and /api/sessions see."""

    started_s: float = field(default_factory=time.monotonic)
    audio_ms: float = 0.0
    frames_sent: int = 0
    idle_frames_sent: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason ("late", "slow_client") -> frames
    silent_skipped: int = 0  # frames of silence not made because idle frames are off
    thinned: int = 0  # frames left out to lower the frame rate for a slow link
    interpolated: int = 0  # frames sent that were blended from their neighbours (renderer at half rate)
    fallbacks: int = 0
    errors: int = 0
    renderer: str = ""
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW_FRAMES))
    audio_quality: AudioQuality = field(default_factory=AudioQuality)  # of the audio received
    first_frames_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW_FRAMES))  # per turn
    quality: Callable[[], dict] | None = None  # the adaptive quality's figures, where there is one

    def sent(self, latency_ms: float, idle: bool) -> None:
        self.frames_sent += 1
        self.idle_frames_sent += idle
        if not idle:
            self.latencies_ms.append(latency_ms)

    def first_frame(self, ms: float) -> None:
        """A turn's time to first frame: its first audio received to its first frame sent."""
        self.first_frames_ms.append(ms)

    def snapshot(self) -> dict:
        pct = _percentiles(self.latencies_ms, (50, 95, 99))
        return {
            "durationS": round(time.monotonic() - self.started_s, 2),
            "audioMs": round(self.audio_ms, 1),
            "framesSent": self.frames_sent,
            "idleFramesSent": self.idle_frames_sent,
            "framesDropped": sum(self.dropped.values()),
            "droppedByReason": dict(self.dropped),
            "silentFramesSkipped": self.silent_skipped,
            "framesThinned": self.thinned,
            "framesInterpolated": self.interpolated,
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "renderer": self.renderer,
            "latencyMs": pct,
            "audioQuality": self.audio_quality.snapshot(),
            "firstFrameMs": {"last": round(self.first_frames_ms[-1], 1) if self.first_frames_ms else None,
                             **_percentiles(self.first_frames_ms, (50, 95))},
            **({"quality": self.quality()} if self.quality is not None else {}),
        }


def _percentiles(values, qs: tuple[int, ...]) -> dict:
    values = np.asarray(values, np.float64)
    return {f"p{q}": round(float(np.percentile(values, q)), 1) if len(values) else None for q in qs}
