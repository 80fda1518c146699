"""Sync metrics over sliding windows, ITU-R BT.1359 thresholds and letter grades.

All offsets in ms with SyncNet's sign: + = audio leads (early), - = audio lags (late).
ITU-R BT.1359 puts the detectability threshold at audio 45 ms early / 125 ms late and the
acceptability threshold at 90 ms early / 185 ms late.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIGN_CONVENTION = (
    "offset_ms > 0: audio leads the lips (plays early); offset_ms < 0: audio lags (plays late). "
    "Same sign as SyncNet's AV offset (frames x 40 ms at 25 fps)."
)
DETECTABLE_LEAD_MS = 45.0
DETECTABLE_LAG_MS = 125.0
ACCEPTABLE_LEAD_MS = 90.0
ACCEPTABLE_LAG_MS = 185.0
# Upper bounds of |average offset| for each grade, best first; anything above is "D".
GRADES: tuple[tuple[str, float], ...] = (("A+", 20.0), ("A", 40.0), ("B", 80.0), ("C", 120.0))
GRADE_WORDS = {"A+": "excellent", "A": "very good", "B": "good", "C": "acceptable", "D": "poor"}
CONSISTENT_WITHIN_MS = 40.0  # one frame at 25 fps


@dataclass
class SyncWindow:
    """One sliding window: its span, its offset, or why it was skipped.

    offset_ms and confidence are None when skipped; skipped says why ("no speech", ...).
    """

    start_s: float
    end_s: float
    offset_ms: float | None = None
    confidence: float | None = None
    face_share: float = 0.0
    speech_share: float = 0.0
    skipped: str | None = None


@dataclass
class SyncMetrics:
    """Everything measured on one video; see docs/eval.md for each figure's definition.

    curve_offsets_ms / curve_scores: (L,) whole-clip score curve. trace_*: (N,) per tracked
    frame, lip openness and the audio openness at the found offset, for the alignment plot.
    """

    video: str
    audio: str
    duration_s: float
    fps: float
    variable_frame_rate: bool
    audio_start_s: float
    offset_ms: float
    confidence: float
    peak_score: float
    average_offset_ms: float
    max_offset_ms: float
    sync_accuracy: float
    temporal_consistency: float
    offset_spread_ms: float
    violation_rate: float
    grade: str
    face_share: float
    speech_share: float
    windows: list[SyncWindow]
    curve_offsets_ms: np.ndarray = field(repr=False)
    curve_scores: np.ndarray = field(repr=False)
    trace_times_s: np.ndarray = field(repr=False)
    trace_lips: np.ndarray = field(repr=False)
    trace_audio: np.ndarray = field(repr=False)
    notes: list[str] = field(default_factory=list)
    sign_convention: str = SIGN_CONVENTION

    @property
    def measured_windows(self) -> list[SyncWindow]:
        return [w for w in self.windows if w.skipped is None]


@dataclass
class WindowSummary:
    """The window-based figures of SyncMetrics (see `summarise_windows`)."""

    average_offset_ms: float
    max_offset_ms: float
    sync_accuracy: float
    temporal_consistency: float
    offset_spread_ms: float
    violation_rate: float


def grade(offset_ms: float) -> str:
    """Letter grade of an offset: A+ < 20 ms, A < 40, B < 80, C < 120, else D (on |offset|)."""
    size = abs(offset_ms)
    return next((name for name, bound in GRADES if size < bound), "D")


def is_detectable(offset_ms: float) -> bool:
    """Beyond ITU-R BT.1359's detectability threshold: audio > 45 ms early or > 125 ms late."""
    return offset_ms > DETECTABLE_LEAD_MS or offset_ms < -DETECTABLE_LAG_MS


def acceptability(offset_ms: float) -> float:
    """1 inside the detectability band, falling linearly to 0 at the acceptability limits."""
    if offset_ms >= 0:
        return float(np.clip((ACCEPTABLE_LEAD_MS - offset_ms) / (ACCEPTABLE_LEAD_MS - DETECTABLE_LEAD_MS), 0, 1))
    return float(np.clip((ACCEPTABLE_LAG_MS + offset_ms) / (ACCEPTABLE_LAG_MS - DETECTABLE_LAG_MS), 0, 1))


def summarise_windows(windows: list[SyncWindow], whole_clip_offset_ms: float) -> WindowSummary:
    """Seed 000's figures from the measured windows (the whole-clip offset if there are none).

    average: median window offset (robust to the odd window fooled by mouth motion in a
    pause); max: the window offset farthest from 0 (signed); accuracy:
    mean `acceptability`; consistency: share of windows within one 25 fps frame (40 ms) of
    the median window; spread: their standard deviation; violation rate: share beyond the
    detectability thresholds.
    """
    offsets = np.array([w.offset_ms for w in windows if w.skipped is None], np.float64)
    if offsets.size == 0:
        offsets = np.array([whole_clip_offset_ms])
    median = float(np.median(offsets))
    return WindowSummary(
        average_offset_ms=median,
        max_offset_ms=float(offsets[np.argmax(np.abs(offsets))]),
        sync_accuracy=float(np.mean([acceptability(o) for o in offsets])),
        temporal_consistency=float(np.mean(np.abs(offsets - median) <= CONSISTENT_WITHIN_MS)),
        offset_spread_ms=float(offsets.std()),
        violation_rate=float(np.mean([is_detectable(o) for o in offsets])),
    )
