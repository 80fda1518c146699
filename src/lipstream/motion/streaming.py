"""Running an offline driver on a live stream, block by block, on the one clock.

A driver maps a whole clip to a MouthTrack; its output for frame k depends only on audio
within a bounded window around k. `StreamingDriver` keeps a sliding buffer and, each time
enough audio has arrived, drives the window [next frame - context, newest sample] and emits the
frames whose look-ahead is covered. Frame indices and timing are those of an offline render;
the cost is a latency of the look-ahead (driver's `lookahead_ms` + a guard) plus the block.

Every time-based decision here (the CPU cap below) reads the clock it is given (a session's), so
tests can replace it.

What a run would otherwise redo over the whole window is kept between runs: the voice-activity
detector's recurrent state and probabilities (`StreamingVad`: each 32 ms of audio is scored
once) and the per-frame features (`FeatureStream`: each frame's spectrum and pitch computed once),
so a run costs the new frames plus the driver's own maths over the window.

`block_s = 0` is progressive processing: the driver runs as soon as one more frame is ready.
When runs are slow (a busy machine), running it for every frame can still cost more CPU than
the frames are worth; `max_cpu_share` caps the driver's time at that share of real time by waiting
for more audio between runs when a run is slow (progressive when cheap, batched when not). The
cap starts afresh after `flush` (the end of a turn): the next turn's first frame, the one a
listener waits for, is made as soon as its audio and look-ahead are in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.audio.features import FeatureStream
from lipstream.audio.vad import StreamingVad
from lipstream.motion.params import PARAM_NAMES

CONTEXT_S = 1.0
EDGE_GUARD_S = 0.2


class StreamingDriver:
    """Feeds float32 mono 16 kHz chunks to `driver` and returns mouth parameters as they settle.

    `push(samples)` returns the new rows (n, 4) for frames whose audio and look-ahead have
    arrived; `flush()` returns the rest at the end of a turn. Frame indices are global:
    `next_frame` is the index of the next row that will be returned.

    block_s: audio (s) collected between driver runs; 0 runs it whenever a frame is ready.
    context_s: audio (s) before the first new frame given to the driver (its warm-up).
    guard_s: audio (s) waited for beyond the driver's own `lookahead_ms`.
    max_cpu_share: the most driver time per second of audio (None: no cap).
    lookahead_s: the whole look-ahead (s) after a frame's span, replacing the driver's own plus the
    guard (None: those); shorter than the driver's own decides frames on less future audio.
    now: monotonic seconds (the session's clock), to measure the driver's cost for the CPU cap.
    """

    def __init__(self, driver, fps: float, block_s: float = 0.2, context_s: float = CONTEXT_S,
                 guard_s: float = EDGE_GUARD_S, max_cpu_share: float | None = None,
                 lookahead_s: float | None = None, now: Callable[[], float] = time.monotonic):
        self.clock = FrameClock(fps)
        self.now = now
        self.fixed_lookahead = None if lookahead_s is None else int(round(lookahead_s * SAMPLE_RATE))
        self.block = int(block_s * SAMPLE_RATE)
        self.max_cpu_share = max_cpu_share
        self._cpu_block = 0  # samples to wait for after a run, from the last run's cost
        self.context = int(context_s * SAMPLE_RATE)
        self.guard = int(guard_s * SAMPLE_RATE)
        self.set_driver(driver)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # global sample index of _buffer[0]
        self._received = 0
        self._pending = 0  # samples received since the last drive
        self._vad = StreamingVad()
        self._features = FeatureStream(fps)
        self.next_frame = 0

    def set_driver(self, driver) -> None:
        """Use `driver` from the next frame on (a switch mid-stream keeps the clock)."""
        self.driver = driver
        own = int(driver.lookahead_ms / 1000 * SAMPLE_RATE) + self.guard
        self.lookahead = own if self.fixed_lookahead is None else self.fixed_lookahead

    @property
    def received(self) -> int:
        """Samples pushed so far (the stream's length on the clock)."""
        return self._received

    def needed_sample(self, k: int) -> int:
        """Samples that must have arrived before frame k can be emitted (its span + look-ahead)."""
        return self.clock.frame_start(k + 1) + self.lookahead

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append samples, then return the rows that are ready (if a block has been collected)."""
        self.append(samples)
        return self.ready()

    def append(self, samples: np.ndarray) -> None:
        """Add float32 mono 16 kHz samples without running the driver (`ready` runs it)."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, samples])
        self._vad.push(samples)
        self._received += len(samples)
        self._pending += len(samples)

    def ready(self, arrived: int | None = None) -> np.ndarray:
        """Rows (n, 4) of the frames whose audio and look-ahead are in, once a block is collected.
        arrived: the stream's length on the clock (default: the samples received); a caller whose
        analysis copy lags its input by a resampler's filter delay (about 1 ms) passes the input's,
        so that delay does not hold a frame back until the next chunk."""
        if self._pending < max(self.block, self._cpu_block, 1):
            return _no_rows()
        last = self._last_frame_ending_by((self._received if arrived is None else arrived) - self.lookahead)
        if last <= self.next_frame:
            return _no_rows()
        self._pending = 0
        return self._emit(last)

    def flush(self) -> np.ndarray:
        """Rows for every remaining frame of the audio received so far (the last may be partial)."""
        self._pending = 0
        rows = self._emit(self.clock.frame_count(self._received))
        self._cpu_block = 0
        return rows

    def skip_to_frame_boundary(self) -> None:
        """Forget audio not yet shown by a frame and move the clock to the next frame boundary
        (an interruption): the next audio starts a new frame; indices stay increasing."""
        self.next_frame = max(self.next_frame, self.clock.frame_count(self._received))
        self.pad_to(self.clock.frame_start(self.next_frame))
        self._pending = 0
        self._trim()

    def pad_to(self, sample: int) -> None:
        """Append silence up to global sample index `sample` (nothing if already there)."""
        if sample > self._received:
            self.append(np.zeros(sample - self._received, np.float32))

    def _last_frame_ending_by(self, sample: int) -> int:
        """Number of frames whose audio ends at or before `sample`."""
        k = self.clock.frame_count(max(sample, 0))
        while k > 0 and self.clock.frame_start(k) > sample:
            k -= 1
        return k

    def _emit(self, end_frame: int) -> np.ndarray:
        if end_frame <= self.next_frame:
            return _no_rows()
        window_start = max(self.clock.frame_start(self.next_frame) - self.context, self._buffer_start)
        # Drive from a frame boundary so the driver's frame grid matches the global one.
        first_frame = self.clock.frame_count(window_start)
        window_start = self.clock.frame_start(first_frame)
        audio = self._buffer[window_start - self._buffer_start :]
        start = self.now()
        speech = self._vad.mask(window_start, len(audio), self.clock.fps)
        track = self.driver.drive(audio, speech, self._features.window(audio, first_frame))
        rows = track.values[self.next_frame - first_frame : end_frame - first_frame]
        if self.max_cpu_share:
            self._cpu_block = int((self.now() - start) / self.max_cpu_share * SAMPLE_RATE)
        missing = end_frame - self.next_frame - len(rows)
        if missing > 0:  # a partial last frame the driver's rounding left out: hold the last shape
            held = rows[-1:] if len(rows) else np.zeros((1, len(PARAM_NAMES)), np.float32)
            rows = np.vstack([rows, np.repeat(held, missing, axis=0)])
        self.next_frame = end_frame
        self._trim()
        return rows

    def _trim(self) -> None:
        keep_from = max(self.clock.frame_start(self.next_frame) - self.context, 0)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        self._vad.forget_before(keep_from - self.context)  # the VAD's smoothing reads back past the window


def _no_rows() -> np.ndarray:
    return np.zeros((0, len(PARAM_NAMES)), np.float32)
