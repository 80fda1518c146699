"""Running an offline driver on a live stream, block by block, on the one clock.

A driver maps a whole clip to a MouthTrack; its output for frame k depends only on audio
within a bounded window around k. `StreamingDriver` keeps a sliding buffer and, each time
enough audio has arrived, drives the window [next frame - context, newest sample] and emits the
frames whose look-ahead is covered. The frames it emits are therefore identical in timing to an
offline render; the cost is a latency of `lookahead_ms` plus the block size.
"""

from __future__ import annotations

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.motion.params import PARAM_NAMES

CONTEXT_S = 1.0
EDGE_GUARD_S = 0.2


class StreamingDriver:
    """Feeds float32 mono 16 kHz chunks to `driver` and returns mouth parameters as they settle.

    `push(samples)` returns the new rows (n, 4) for frames whose audio and look-ahead have
    arrived; `flush()` returns the rest at the end of the stream. Frame indices are global:
    `next_frame` is the index of the next row that will be returned.
    """

    def __init__(self, driver, fps: float, block_s: float = 0.2):
        self.driver = driver
        self.clock = FrameClock(fps)
        self.block = int(block_s * SAMPLE_RATE)
        self.lookahead = int((driver.lookahead_ms / 1000 + EDGE_GUARD_S) * SAMPLE_RATE)
        self.context = int(CONTEXT_S * SAMPLE_RATE)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # global sample index of _buffer[0]
        self._received = 0
        self._pending = 0  # samples received since the last drive
        self.next_frame = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += len(samples)
        self._pending += len(samples)
        if self._pending < self.block:
            return np.zeros((0, len(PARAM_NAMES)), np.float32)
        self._pending = 0
        ready_until = self._received - self.lookahead
        last = self._last_frame_ending_by(ready_until)
        return self._emit(last)

    def flush(self) -> np.ndarray:
        """Rows for every remaining frame of the audio received so far."""
        return self._emit(self.clock.frame_count(self._received))

    def _last_frame_ending_by(self, sample: int) -> int:
        """Number of frames whose audio ends at or before `sample`."""
        k = self.clock.frame_count(max(sample, 0))
        while k > 0 and self.clock.frame_start(k) > sample:
            k -= 1
        return k

    def _emit(self, end_frame: int) -> np.ndarray:
        if end_frame <= self.next_frame:
            return np.zeros((0, len(PARAM_NAMES)), np.float32)
        window_start = max(self.clock.frame_start(self.next_frame) - self.context, self._buffer_start)
        audio = self._buffer[window_start - self._buffer_start :]
        # Drive from a frame boundary so the driver's frame grid matches the global one.
        first_frame = self.clock.frame_count(window_start)
        audio = audio[self.clock.frame_start(first_frame) - window_start :]
        rows = self.driver.drive(audio).values[self.next_frame - first_frame : end_frame - first_frame]
        self.next_frame = end_frame
        self._trim()
        return rows

    def _trim(self) -> None:
        keep_from = max(self.clock.frame_start(self.next_frame) - self.context, 0)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
