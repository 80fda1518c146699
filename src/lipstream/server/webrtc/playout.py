"""The peer's output timeline: a session's frames (image + their exact audio) placed on one
clock that both outgoing tracks read, so the browser plays voice and face in sync by itself.

Time here is output ticks at OUT_RATE_HZ (48 kHz, Opus' rate), counted from `start_s` (session
clock seconds): tick t is due to be sent at start_s + t / OUT_RATE_HZ. The timeline starts
(`begin`) when a track first asks for media, i.e. once the peer is connected: started earlier,
the tracks would send the time spent connecting in one burst, which the browser's audio jitter
buffer keeps as extra delay for seconds (audio behind the face); frames made before it are
dropped (they are idle ones: the client's audio flows only once connected). The audio track sends
packet n (ticks [n*960, (n+1)*960)) when it is due, silence where nothing was placed; the video
track sends each frame when its tick is due, with pts = tick * 90000 / 48000. Both are paced from
the same start, so the RTCP sender reports of the two streams agree and the browser lines them up.

Placement follows the session's one clock: a frame that continues the previous one (its pts is
where the last one ended) goes right after it, so the audio is contiguous and every frame sits
exactly at its own audio; the first frame of a run (a new turn, or the first after a stall) goes
`margin_s` ahead of now, the jitter the frames may arrive with. If a frame comes after the audio
track has already sent its place (an underrun: rendering stalled longer than the margin), the
run starts again `margin_s` ahead: a short silence and a held image, never audio out of step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lipstream.stream.events import FrameOut

OUT_RATE_HZ = 48000
AUDIO_PTIME_S = 0.02
AUDIO_PACKET_TICKS = round(OUT_RATE_HZ * AUDIO_PTIME_S)
VIDEO_CLOCK_RATE = 90000


@dataclass
class Placed:
    """A frame on the timeline: shown from output tick `tick`."""

    tick: int
    frame: FrameOut

    @property
    def video_pts(self) -> int:
        """`tick` in 90 kHz video clock units."""
        return self.tick * VIDEO_CLOCK_RATE // OUT_RATE_HZ


class Playout:
    """Frames in (`place`), audio packets and due video frames out (see the module docstring).

    now: the session clock (monotonic s). margin_s: how far ahead of now a run starts.
    """

    def __init__(self, now: Callable[[], float], margin_s: float):
        self.now = now
        self.margin = round(margin_s * OUT_RATE_HZ)
        self.start_s: float | None = None
        self.cursor = 0  # the first tick after everything placed
        self.audio_sent = 0  # ticks the audio track has taken
        self.underruns = 0
        self._next_pts: int | None = None  # the session pts that continues the current run
        self._audio: deque[tuple[int, np.ndarray]] = deque()  # (first tick, mono int16), in order
        self.video: deque[Placed] = deque()

    def begin(self) -> None:
        """Start the timeline now (the first call only)."""
        if self.start_s is None:
            self.start_s = self.now()

    def playhead(self) -> int:
        """The tick due now."""
        return int((self.now() - self.start_s) * OUT_RATE_HZ)

    def due_s(self, tick: int) -> float:
        """When `tick` is due (session clock s)."""
        return self.start_s + tick / OUT_RATE_HZ

    def place(self, frame: FrameOut) -> Placed | None:
        """Put a frame (with its audio: PCM16 mono at OUT_RATE_HZ, or none) on the timeline;
        None (dropped) before `begin`."""
        if self.start_s is None:
            return None
        if frame.audio and (frame.sample_rate, frame.channels) != (OUT_RATE_HZ, 1):
            raise ValueError(f"frame audio must be mono at {OUT_RATE_HZ} Hz, not {frame.channels} "
                             f"channel(s) at {frame.sample_rate} Hz")
        samples = np.frombuffer(frame.audio, "<i2")
        continues = frame.span > 0 and frame.pts == self._next_pts
        if continues and self.cursor >= self.audio_sent:
            tick = self.cursor
        else:
            if continues:
                self.underruns += 1
            tick = max(self.cursor, self.audio_sent, self.playhead() + self.margin)
        self._next_pts = frame.pts + frame.span if frame.span > 0 else None
        if len(samples):
            self._audio.append((tick, samples))
        self.cursor = tick + max(len(samples), 1)
        placed = Placed(tick, frame)
        self.video.append(placed)
        return placed

    def take_audio(self) -> tuple[int, np.ndarray]:
        """The next audio packet: (first tick, AUDIO_PACKET_TICKS int16 samples), silence where
        nothing was placed. Call it when the packet is due (`due_s(first tick)`)."""
        start, end = self.audio_sent, self.audio_sent + AUDIO_PACKET_TICKS
        out = np.zeros(AUDIO_PACKET_TICKS, np.int16)
        while self._audio and self._audio[0][0] < end:
            first, samples = self._audio[0]
            last = first + len(samples)
            lo, hi = max(first, start), min(last, end)
            if hi > lo:
                out[lo - start : hi - start] = samples[lo - first : hi - first]
            if last <= end:
                self._audio.popleft()
            else:
                self._audio[0] = (end, samples[end - first :])
        self.audio_sent = end
        return start, out
