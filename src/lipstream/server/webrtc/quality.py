"""Adaptive quality over WebRTC: the receiver's bandwidth estimate (REMB) against the video bitrate
actually sent steps one ladder: the encoder's bitrate cap first, then the frame size, then the frame
rate (25 -> 20 -> 15), and back up when the link has room again.

A receiver's estimator (WebRTC's AIMD, also aiortc's) climbs to about 1.5x the rate it receives
while the link keeps up and falls to about 0.85x of it when it doesn't, whatever the content
needs. So the ratio estimate / sent rate is the signal: below DOWN_RATIO the link can't carry what is
sent: after DOWN_CONFIRM such estimates in a row (one may be a keyframe's burst) quality steps
down (the bitrate caps above the estimate in one go, then one size or frame-rate step; the next
step waits DOWN_HOLD_S for the rate to follow); at UP_RATIO or more for UP_HOLD_S it steps up one
rung. The encoder's target is the rung's cap (it changes only with the steps: aiortc restarts its
encoder, with a keyframe, whenever the target moves by 10%).
Times are seconds of an injected clock (`now` arguments), so tests need no waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

DOWN_RATIO = 0.9
UP_RATIO = 1.3
DOWN_HOLD_S = 1.0
DOWN_CONFIRM = 2
UP_HOLD_S = 2.0


@dataclass(frozen=True)
class Rung:
    """One quality level: the encoder's bitrate cap, the frame size factor, the frame rate."""

    max_bitrate_bps: int
    scale: float
    fps: float


# Best first. Below the video encoder's own floor (aiortc's VP8: 250 kbit/s) the frame gets
# smaller, then the frame rate lower.
LADDER: tuple[Rung, ...] = (
    Rung(1_500_000, 1.0, 25),
    Rung(1_000_000, 1.0, 25),
    Rung(700_000, 1.0, 25),
    Rung(500_000, 1.0, 25),
    Rung(350_000, 1.0, 25),
    Rung(250_000, 0.75, 25),
    Rung(250_000, 0.5, 25),
    Rung(250_000, 0.5, 20),
    Rung(250_000, 0.5, 15),
)
START_RUNG = 3  # aiortc's VP8 encoder starts at 500 kbit/s


@dataclass(frozen=True)
class Step:
    """One move between neighbouring rungs: direction "down" or "up"; knob "bitrate",
    "resolution" or "fps" (what changed between them); `rung` (at `index`) is the one moved to."""

    direction: str
    knob: str
    rung: Rung
    index: int


def knob_between(a: Rung, b: Rung) -> str:
    """What changes between two neighbouring rungs."""
    if a.fps != b.fps:
        return "fps"
    if a.scale != b.scale:
        return "resolution"
    return "bitrate"


class QualityLadder:
    """Follows the bandwidth estimate on LADDER (see the module docstring)."""

    def __init__(self, start: int = START_RUNG, ladder: tuple[Rung, ...] = LADDER):
        self.ladder = ladder
        self.index = start
        self.estimate_bps: int | None = None
        self.sent_bps: int | None = None
        self._room_since: float | None = None  # when the estimate first showed room to step up
        self._last_down: float | None = None
        self._congested = 0  # estimates below DOWN_RATIO in a row

    @property
    def rung(self) -> Rung:
        return self.ladder[self.index]

    @property
    def bitrate_bps(self) -> int:
        """The encoder's target: the rung's cap."""
        return self.rung.max_bitrate_bps

    def update(self, estimate_bps: float, sent_bps: float, now: float) -> list[Step]:
        """Take a new estimate and the video bitrate sent since the last one (bit/s) at `now` (s);
        returns the steps taken, in order."""
        self.estimate_bps, self.sent_bps = int(estimate_bps), int(sent_bps)
        if sent_bps <= 0:
            return []
        ratio = estimate_bps / sent_bps
        self._congested = self._congested + 1 if ratio < DOWN_RATIO else 0
        if ratio < DOWN_RATIO:
            self._room_since = None
            if self._congested < DOWN_CONFIRM or self.index == len(self.ladder) - 1 or (self._last_down is not None
                                                     and now - self._last_down < DOWN_HOLD_S):
                return []
            self._last_down = now
            steps = []
            while self.index < len(self.ladder) - 1:
                steps.append(self._move(self.index + 1, "down"))
                if steps[-1].knob != "bitrate" or self.rung.max_bitrate_bps <= estimate_bps:
                    break
            return steps
        if ratio < UP_RATIO or self.index == 0:
            self._room_since = None
            return []
        if self._room_since is None:
            self._room_since = now
        if now - self._room_since < UP_HOLD_S:
            return []
        self._room_since = now
        return [self._move(self.index - 1, "up")]

    def _move(self, index: int, direction: str) -> Step:
        knob = knob_between(self.ladder[self.index], self.ladder[index])
        self.index = index
        return Step(direction, knob, self.ladder[index], index)
