"""Adaptive quality over the WebSocket: what a client's link takes decides what is sent to it.

The send loop tells the controller, after each message and while it waits, how many bytes the
client has taken (acknowledged by its TCP stack) and how many still wait for it in the socket's
buffers (`lipstream.server.transport.SendMeter`). From these it keeps the drain rate: bytes and
frames a second the client took over the last RATE_WINDOW_S of time in which bytes waited for it
(between two readings that both found some waiting). Time in which nothing waited says nothing
of what the link can carry, so a quiet second followed by a burst is not congestion. The queue
delay is bytes waiting / drain rate. A delay over CONGESTED_DELAY_S that lasts CONGESTED_FOR_S steps one level
down the ladder, at most one step every DOWN_INTERVAL_S (so that a step's effect is seen before
the next); a delay under CLEAR_DELAY_S for `up_hold_s` steps one level up. An up step followed
by congestion within PROBE_S failed: the hold before the next one doubles (up to MAX_UP_HOLD_S);
one that lasts resets it (hysteresis). Time is read from the session's clock (`now`).

The ladder (`ladder`): the preset's JPEG quality, then lower qualities, then smaller frames, then
frame rates 25 -> 20 -> 15 (H.264 streams step frame rate only). Quality alone can't reach a slow
link: a 256 px frame of the bundled avatar is 3.2 KB at JPEG quality 10, 384 kbit/s at 15 fps;
at half size and quality 30 it is 1.9 KB (measured with cv2.imencode, huffman tables optimised).
Frames are dropped (the outbox's limits) only when even the last step is more than the link takes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lipstream.stream.encode import OutputLevel

JPEG_QUALITY_STEPS = (60, 40, 30)  # below the preset's, in order
SCALE_STEPS = (0.75, 0.5)  # of the frame's sides, at the last quality step
FPS_STEPS = (20.0, 15.0)
LAST_JPEG_QUALITY = 20  # after the frame rate steps: the floor
RATE_WINDOW_S = 1.0  # of time in which bytes waited for the client
MIN_RATE_SPAN_S = 0.1  # the drain rate needs this much of it
MIN_DRAIN_BYTES_S = 4000.0  # the rate a delay is counted at when the client takes (almost) nothing
CONGESTED_DELAY_S = 0.25
CONGESTED_FOR_S = 0.2
CLEAR_DELAY_S = 0.08
DOWN_INTERVAL_S = 0.4
UP_HOLD_S = 3.0
MAX_UP_HOLD_S = 48.0
PROBE_S = 5.0


def ladder(fmt: str, preset_quality: int, fps: float) -> list[OutputLevel]:
    """The levels a session at `fps` steps through, best first (see the module docstring)."""
    rates = [f for f in FPS_STEPS if f < fps]
    if fmt != "jpeg":
        return [OutputLevel(fps=f) for f in (fps, *rates)]
    levels = [OutputLevel(q, 1.0, fps) for q in (preset_quality, *JPEG_QUALITY_STEPS) if q <= preset_quality]
    quality = levels[-1].jpeg_quality
    levels += [OutputLevel(quality, scale, fps) for scale in SCALE_STEPS]
    scale = levels[-1].scale
    levels += [OutputLevel(quality, scale, f) for f in rates]
    if LAST_JPEG_QUALITY < quality:
        levels.append(OutputLevel(LAST_JPEG_QUALITY, scale, levels[-1].fps))
    return levels


@dataclass(frozen=True)
class Step:
    """A change of level: `direction` "down" or "up", to `index` of the ladder."""

    direction: str
    index: int
    level: OutputLevel


class AdaptiveQuality:
    """Chooses the output level of one session from how fast its client drains the socket."""

    def __init__(self, levels: list[OutputLevel], now: Callable[[], float]):
        self.levels = levels
        self.now = now
        self.index = 0
        self.steps = {"down": 0, "up": 0}
        self.up_hold_s = UP_HOLD_S
        self.delay_s = 0.0
        self._busy: deque[tuple[float, int, int]] = deque()  # (seconds, bytes, frames taken) while bytes waited
        self._busy_s = 0.0
        self._last: tuple[float, int, int, int] | None = None  # (time, delivered, queued, frames taken)
        self._frame_ends: deque[int] = deque()  # byte positions where frames sent end, not yet taken
        self._taken = 0
        self._congested_since: float | None = None
        self._clear_since: float | None = now()
        self._last_change = now()
        self._last_up: float | None = None

    @property
    def level(self) -> OutputLevel:
        return self.levels[self.index]

    def frame_sent(self, end_bytes: int) -> None:
        """A frame was written; its last byte is at `end_bytes` of everything written."""
        self._frame_ends.append(end_bytes)

    def drain_rate(self) -> tuple[float | None, float | None]:
        """(bytes/s, frames/s) the client took while bytes waited for it; None until known."""
        if self._busy_s < MIN_RATE_SPAN_S:
            return None, None
        return sum(b for _, b, _ in self._busy) / self._busy_s, sum(f for _, _, f in self._busy) / self._busy_s

    def update(self, delivered: int, queued: int) -> Step | None:
        """Take a reading (bytes the client has taken, bytes waiting for it); the step it makes, if any."""
        now = self.now()
        taken = self._taken
        while self._frame_ends and self._frame_ends[0] <= delivered:
            self._frame_ends.popleft()
            self._taken += 1
        if self._last is not None:
            last_s, last_delivered, last_queued, _ = self._last
            if last_queued > 0 and queued > 0 and now > last_s:  # the link was busy all along
                self._busy.append((now - last_s, delivered - last_delivered, self._taken - taken))
                self._busy_s += now - last_s
                while self._busy_s - self._busy[0][0] >= RATE_WINDOW_S:
                    self._busy_s -= self._busy.popleft()[0]
        self._last = (now, delivered, queued, self._taken)
        rate, _ = self.drain_rate()
        self.delay_s = 0.0 if rate is None else queued / max(rate, MIN_DRAIN_BYTES_S)
        if self.delay_s > CONGESTED_DELAY_S:
            self._clear_since = None
            self._congested_since = now if self._congested_since is None else self._congested_since
            if now - self._congested_since >= CONGESTED_FOR_S and now - self._last_change >= DOWN_INTERVAL_S:
                return self._step_down(now)
            return None
        self._congested_since = None
        if self.delay_s >= CLEAR_DELAY_S:
            self._clear_since = None
            return None
        self._clear_since = now if self._clear_since is None else self._clear_since
        if self._last_up is not None and now - self._last_up >= PROBE_S:
            self._last_up, self.up_hold_s = None, UP_HOLD_S  # the last step up held
        if self.index and now - self._clear_since >= self.up_hold_s and now - self._last_change >= self.up_hold_s:
            return self._step("up", self.index - 1, now)
        return None

    def snapshot(self) -> dict:
        """The level and the drain figures, for the session's stats."""
        rate, fps = self.drain_rate()
        level = self.level
        return {"level": self.index, "levels": len(self.levels), "jpegQuality": level.jpeg_quality,
                "scale": level.scale, "fps": level.fps, "stepsDown": self.steps["down"], "stepsUp": self.steps["up"],
                "drainKbps": None if rate is None else round(rate * 8 / 1000, 1),
                "drainFps": None if fps is None else round(fps, 1), "queueMs": round(self.delay_s * 1000, 1)}

    def _step_down(self, now: float) -> Step | None:
        if self.index == len(self.levels) - 1:
            return None
        if self._last_up is not None and now - self._last_up < PROBE_S:  # the probe up failed
            self.up_hold_s = min(self.up_hold_s * 2, MAX_UP_HOLD_S)
        self._last_up = None
        return self._step("down", self.index + 1, now)

    def _step(self, direction: str, index: int, now: float) -> Step:
        self.index = index
        self.steps[direction] += 1
        self._last_change = now
        if direction == "up":
            self._last_up = now
        self._congested_since = None
        self._clear_since = None if direction == "down" else now
        return Step(direction, index, self.level)
