"""Audio arriving on a socket: the layout of a chunk's bytes, checked and turned into samples.

A client states the format once (rate, channels, pcm16 or f32); each chunk is checked (whole
samples, at most MAX_CHUNK_S long, finite) and becomes (n, channels) samples that the session
takes as they are (see lipstream.audio.pcm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.pcm import MAX_CHANNELS, MAX_RATE_HZ, MIN_RATE_HZ, check_format
from lipstream.errors import BadAudioError

ENCODINGS = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
MAX_CHUNK_S = 1.0

__all__ = ["ENCODINGS", "MAX_CHANNELS", "MAX_CHUNK_S", "MAX_RATE_HZ", "MIN_RATE_HZ", "AudioFormat"]


@dataclass(frozen=True)
class AudioFormat:
    """How a chunk's bytes are laid out: interleaved little-endian samples."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    encoding: str = "pcm16"  # "pcm16" (int16) or "f32" (float32 in [-1, 1])

    def validate(self) -> None:
        if self.encoding not in ENCODINGS:
            raise BadAudioError(f"audio encoding {self.encoding!r} is not supported; use pcm16 or f32")
        check_format(self.sample_rate, self.channels)

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample of every channel."""
        return ENCODINGS[self.encoding].itemsize * self.channels

    def samples(self, data: bytes) -> np.ndarray:
        """One chunk as (n, channels) int16 or float32; BadAudioError for malformed chunks."""
        self.validate()
        if len(data) % self.bytes_per_frame:
            raise BadAudioError(
                f"an audio chunk of {len(data)} bytes is not a whole number of {self.channels}-channel "
                f"{self.encoding} samples ({self.bytes_per_frame} bytes each)"
            )
        n = len(data) // self.bytes_per_frame
        if n > MAX_CHUNK_S * self.sample_rate + 1:
            raise BadAudioError(f"an audio chunk of {n / self.sample_rate:.2f} s is too long; "
                                f"send at most {MAX_CHUNK_S:g} s per chunk")
        samples = np.frombuffer(data, ENCODINGS[self.encoding])
        if self.encoding == "f32" and not np.isfinite(samples).all():
            raise BadAudioError("float32 audio contains NaN or infinity; send samples in [-1, 1]")
        return samples.astype(np.int16 if self.encoding == "pcm16" else np.float32).reshape(n, self.channels)
