"""The one clock: time is the audio sample index at 16 kHz.

Video frame k at F fps covers audio samples [k*sr/F, (k+1)*sr/F). Every timestamp in the
project (files, socket messages, metrics) is derived from this, never from wall-clock pacing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class FrameClock:
    """Maps video frame indices to audio sample ranges; `fps` may be fractional (e.g. 29.97)."""

    fps: float
    sample_rate: int = SAMPLE_RATE

    def frame_start(self, k: int) -> int:
        """First audio sample of frame k."""
        return int(round(k * self.sample_rate / self.fps))

    def frame_span(self, k: int) -> tuple[int, int]:
        """Audio samples [start, end) shown by frame k."""
        return self.frame_start(k), self.frame_start(k + 1)

    def frame_count(self, n_samples: int) -> int:
        """Frames needed to show n_samples of audio (the last frame may be partly covered)."""
        return int(math.ceil(n_samples * self.fps / self.sample_rate - 1e-9))

    def frame_time_s(self, k: int) -> float:
        """Presentation time of frame k in seconds."""
        return self.frame_start(k) / self.sample_rate
