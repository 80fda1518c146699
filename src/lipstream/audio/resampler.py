"""A stream of audio chunks (any rate and channel count) -> float32 mono 16 kHz for analysis.

One stateful resampler per stream (libswresample through PyAV), so the output length is exact
over any number of chunks of any size: resampling each chunk on its own would round every
chunk's length, and those roundings add up to seconds of drift over an hour.
"""

from __future__ import annotations

import av
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE

_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_FORMATS = {np.dtype(np.int16): "s16", np.dtype(np.float32): "flt"}


class StreamResampler:
    """Chunks (n, channels) int16 or float32 at a rate in, float32 mono 16 kHz (m,) out."""

    def __init__(self):
        self._format: tuple[int, int, str] | None = None
        self._resampler: av.AudioResampler | None = None

    def push(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """The analysis samples for one chunk (a change of format first flushes the old one's tail)."""
        fmt = (sample_rate, samples.shape[1], _FORMATS[samples.dtype])
        tail = self.flush() if fmt != self._format else np.zeros(0, np.float32)
        self._format = fmt
        if len(samples) == 0:
            return tail
        if sample_rate == SAMPLE_RATE and samples.shape[1] == 1:
            out = samples[:, 0].astype(np.float32) / (32768.0 if samples.dtype == np.int16 else 1.0)
        else:
            if self._resampler is None:
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1)), format=fmt[2],
                                               layout=_LAYOUTS[fmt[1]])
            frame.sample_rate = sample_rate
            out = _joined(self._resampler.resample(frame))
        out = np.clip(out, -1.0, 1.0)
        return np.concatenate([tail, out]) if len(tail) else out

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler's filter (end of a turn or a format change)."""
        resampler, self._resampler, self._format = self._resampler, None, None
        if resampler is None:
            return np.zeros(0, np.float32)
        return np.clip(_joined(resampler.resample(None)), -1.0, 1.0)


def _joined(frames: list) -> np.ndarray:
    out = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
