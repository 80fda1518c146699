"""What a session pipeline hands to the transport: frames, echoed audio, status, drops, errors.

All times are on one of two bases, never mixed: media times (`pts`, `span`) are ticks of the one
clock (1/16000 s); `ready_s` / `deadline_s` are monotonic seconds used only to
measure latency and to drop stale frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FrameOut:
    """One encoded frame.

    index: frame k on the clock (idle frames: the index the next speech frame will have).
    pts: first audio sample the frame shows; span: samples it shows (0 for idle frames, which
    sit at the end of the audio received so far and belong to no audio).
    ready_s: when the frame could first have been made (its audio and look-ahead had arrived);
    deadline_s: after this it is stale and dropped rather than sent.
    mouth: the mouth parameters (4,) float32 the frame shows (PARAM_NAMES order).
    turn_arrived_s: on a turn's first frame, when its first audio arrived (else None).
    audio: with `frame_audio` on, the exact audio the frame shows as interleaved PCM16 at
    `sample_rate` with `channels` (empty for idle frames); otherwise empty.
    interpolated: blended from its neighbours, not rendered (the renderer was at half rate).
    """

    index: int
    pts: int
    span: int
    data: bytes
    keyframe: bool
    idle: bool
    ready_s: float
    deadline_s: float
    renderer: str
    mouth: np.ndarray
    turn_arrived_s: float | None = None
    audio: bytes = b""
    sample_rate: int = 0
    channels: int = 0
    interpolated: bool = False


@dataclass
class AudioOut:
    """A chunk of audio as the client sent it, echoed back: interleaved PCM16 at its own rate
    and channels, its first sample at clock tick `pts` (1/16000 s)."""

    pts: int
    pcm16: bytes
    sample_rate: int
    channels: int


@dataclass
class Status:
    """A change the client should know of: turn_started, turn_ended, fallback, render_rate, switched."""

    event: str
    detail: dict = field(default_factory=dict)


@dataclass
class Dropped:
    """Frames not sent: `reason` is "late" (past its deadline) or "silent" (idle frames off)."""

    count: int
    reason: str


@dataclass
class Failure:
    """An error from the pipeline: `kind` is the exception class name; fatal ends the session."""

    kind: str
    message: str
    fatal: bool

    @classmethod
    def from_exception(cls, exc: BaseException, fatal: bool) -> Failure:
        return cls(type(exc).__name__, str(exc), fatal)


Event = FrameOut | AudioOut | Status | Dropped | Failure
