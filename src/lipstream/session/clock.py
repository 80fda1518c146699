"""The one place wall-clock time enters a session: a clock object with `now()` (monotonic s).

Production sessions use `RealClock`; tests give a `ManualClock` and move it themselves, so that
deadlines, dropping, idle pacing and fallback behave the same on a loaded machine as on an idle one.
Media time never comes from here: it is the audio sample index (lipstream.audio.clock).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds (only differences mean anything)."""


class RealClock:
    """time.monotonic: the same base in every process of the machine (the server's workers too)."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests, simulations faster than real time)."""

    def __init__(self, start_s: float = 100.0):
        self.t = float(start_s)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
