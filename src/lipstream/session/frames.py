"""What a session hands out: frames (an image with its exact audio) and notices (turns, changes).

Timestamps are integer ticks of the session's one clock with an explicit `time_base`, as aiortc
keeps them: `pts * time_base` is seconds from the start of the session's audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE

TIME_BASE = Fraction(1, SAMPLE_RATE)


@dataclass
class Frame:
    """One output frame.

    image: (H, W, 3) uint8 RGB. audio: (n, channels) the exact slice of the pushed audio this
    frame shows, in the pushed sample type (int16 or float32) at `sample_rate`; the last frame of
    a turn may hold less than a frame's worth, the first frame after a pause that ended a turn
    also the rest of the paused frame's span; idle frames hold none. pts: the first audio tick
    the frame shows, in `time_base` units (1/16000 s); span: ticks it shows (0 when idle).
    index: frame k of the session (frame k shows ticks [k*16000/fps, (k+1)*16000/fps)).
    idle: made between turns, belongs to no audio. renderer: the renderer that drew it.
    mouth: the mouth parameters (4,) float32 shown (PARAM_NAMES order).
    ready_s / deadline_s: session-clock seconds when it could first be made and after which it
    is stale (inf offline). turn_arrived_s: on the first frame made of a live turn, when the
    turn's first audio arrived (session clock; a transport's time to first frame is its send time
    minus this); None on every other frame. interpolated: not rendered but blended from the
    frames before and after it (the renderer fell behind and renders every other frame).
    """

    index: int
    image: np.ndarray
    audio: np.ndarray
    sample_rate: int
    pts: int
    span: int
    idle: bool
    renderer: str
    mouth: np.ndarray
    ready_s: float = 0.0
    deadline_s: float = float("inf")
    turn_arrived_s: float | None = None
    interpolated: bool = False
    time_base: Fraction = TIME_BASE

    @property
    def time_s(self) -> float:
        """pts in seconds."""
        return float(self.pts * self.time_base)

    @property
    def channels(self) -> int:
        return self.audio.shape[1]


@dataclass
class Notice:
    """Something a transport may tell its client: turn_started, turn_ended, interrupted,
    fallback (detail: from_renderer, to_renderer, reason, detail), render_rate (detail:
    halfRate, renderer, detail), switched, or dropped (detail: count, reason "late" or "silent")."""

    event: str
    detail: dict = field(default_factory=dict)
