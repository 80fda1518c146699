"""When each stretch of a session's analysis samples arrived (the session clock's seconds):
what frame latencies and deadlines are measured from."""

from __future__ import annotations

import bisect


class ArrivalLog:
    """`time_of(sample)` is the arrival time of the chunk that brought sample index `sample - 1`;
    entries older than needed are forgotten."""

    def __init__(self):
        self._ends: list[int] = []  # stream length after each chunk (samples)
        self._times: list[float] = []

    def add(self, total_samples: int, arrived_s: float) -> None:
        self._ends.append(total_samples)
        self._times.append(arrived_s)

    def time_of(self, sample: int) -> float | None:
        """Arrival time of the chunk that made the stream at least `sample` long; None if not yet."""
        i = bisect.bisect_left(self._ends, sample)
        return self._times[i] if i < len(self._ends) else None

    def forget_before(self, sample: int) -> None:
        """Drop entries for stream lengths below `sample` (they will not be asked about again)."""
        i = bisect.bisect_left(self._ends, sample)
        if i > 0:
            del self._ends[:i], self._times[:i]

    def clear(self) -> None:
        self._ends.clear()
        self._times.clear()
