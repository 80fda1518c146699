"""Audio arriving on a socket: PCM bytes at any rate and channel count -> the one clock.

Chunks are decoded and resampled to float32 mono 16 kHz by one stateful resampler per stream
(libswresample through PyAV), so the output length is exact over any number of chunks of any
size: resampling each chunk on its own would round every chunk's length, and those roundings
add up to seconds of drift over an hour. `ArrivalLog` remembers when each stretch of samples
arrived (monotonic seconds), which is what frame latencies and deadlines are measured from.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import av
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.errors import BadAudioError

ENCODINGS = {"pcm16": ("s16", np.dtype("<i2")), "f32": ("flt", np.dtype("<f4"))}
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000
MAX_CHANNELS = 8
MAX_CHUNK_S = 1.0
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True)
class AudioFormat:
    """How a chunk's bytes are laid out: interleaved little-endian samples."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    encoding: str = "pcm16"  # "pcm16" (int16) or "f32" (float32 in [-1, 1])

    def validate(self) -> None:
        if self.encoding not in ENCODINGS:
            raise BadAudioError(f"audio encoding {self.encoding!r} is not supported; use pcm16 or f32")
        if not MIN_RATE_HZ <= self.sample_rate <= MAX_RATE_HZ:
            raise BadAudioError(f"sample rate {self.sample_rate} Hz is out of range ({MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise BadAudioError(f"{self.channels} channels is out of range (1-{MAX_CHANNELS})")

    @property
    def is_clock_rate_mono(self) -> bool:
        """Already 16 kHz mono: no resampling needed."""
        return self.sample_rate == SAMPLE_RATE and self.channels == 1

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample of every channel."""
        return ENCODINGS[self.encoding][1].itemsize * self.channels


class StreamResampler:
    """PCM chunks (any `AudioFormat`) in, float32 mono 16 kHz samples out, exact over a stream."""

    def __init__(self):
        self._format: AudioFormat | None = None
        self._resampler: av.AudioResampler | None = None

    def push(self, data: bytes, fmt: AudioFormat) -> np.ndarray:
        """Samples (n,) float32 for one chunk; raises BadAudioError for malformed chunks."""
        fmt.validate()
        if len(data) % fmt.bytes_per_frame:
            raise BadAudioError(
                f"an audio chunk of {len(data)} bytes is not a whole number of {fmt.channels}-channel "
                f"{fmt.encoding} samples ({fmt.bytes_per_frame} bytes each)"
            )
        n = len(data) // fmt.bytes_per_frame
        if n > MAX_CHUNK_S * fmt.sample_rate + 1:
            raise BadAudioError(f"an audio chunk of {n / fmt.sample_rate:.2f} s is too long; "
                                f"send at most {MAX_CHUNK_S:g} s per chunk")
        samples = np.frombuffer(data, ENCODINGS[fmt.encoding][1])
        if fmt.encoding == "f32" and not np.isfinite(samples).all():
            raise BadAudioError("float32 audio contains NaN or infinity; send samples in [-1, 1]")
        tail = self._switch(fmt)
        if n == 0:
            return tail
        if fmt.is_clock_rate_mono:
            out = samples.astype(np.float32) / (32768.0 if fmt.encoding == "pcm16" else 1.0)
        else:
            out = self._resample(samples, fmt, n)
        out = np.clip(out, -1.0, 1.0)
        return np.concatenate([tail, out]) if len(tail) else out

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler's filter (end of a turn or a format change)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(None)]
        self._resampler = None
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _switch(self, fmt: AudioFormat) -> np.ndarray:
        """Start a resampler for a new format, returning the old one's remaining samples."""
        if fmt == self._format and (self._resampler is not None or fmt.is_clock_rate_mono):
            return np.zeros(0, np.float32)
        tail = self.flush()
        self._format = fmt
        if not fmt.is_clock_rate_mono:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        return tail

    def _resample(self, samples: np.ndarray, fmt: AudioFormat, n: int) -> np.ndarray:
        av_format = ENCODINGS[fmt.encoding][0]
        samples = samples.reshape(1, n * fmt.channels)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=av_format,
                                           layout=_LAYOUTS[fmt.channels])
        frame.sample_rate = fmt.sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


class ArrivalLog:
    """When the stream reached each length: `time_of(sample)` is the arrival time (monotonic s)
    of the chunk that brought sample index `sample - 1`; entries older than needed are forgotten."""

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
