"""Audio as it is pushed into a session: arrays or raw PCM16 bytes, kept as they came.

`bytes` means one thing everywhere in lipstream: raw PCM16 samples, little-endian, channels
interleaved, at a sample rate the caller states. An encoded file (wav, mp3, ...) is given as a
path or a binary file object, never as bytes. Arrays are (n,) mono or (n, channels), float in
[-1, 1] or int16. `as_samples` returns (n, channels) in the input's own sample type (int16
stays int16, so PCM in is bit-exact out); nothing is resampled or mixed here.
"""

from __future__ import annotations

import numpy as np

from lipstream.errors import BadAudioError

MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000
MAX_CHANNELS = 8
PCM_TYPES = (bytes, bytearray, memoryview)


def as_samples(audio, sample_rate: int | None, channels: int | None = None) -> np.ndarray:
    """`audio` (PCM16 bytes, or an array) as (n, channels) int16 or float32; BadAudioError if malformed.

    sample_rate is required (checked here for range only); channels is required to split
    interleaved bytes or a flat array of several channels, and checked against a 2-D array.
    """
    check_format(sample_rate, channels or 1)
    if isinstance(audio, PCM_TYPES):
        data = memoryview(audio).cast("B")
        width = 2 * (channels or 1)
        if len(data) % width:
            raise BadAudioError(f"{len(data)} bytes of PCM16 are not a whole number of {channels or 1}-channel "
                                f"samples ({width} bytes each); bytes are raw PCM16 (give a path for a file)")
        return np.frombuffer(data, "<i2").astype(np.int16).reshape(-1, channels or 1)
    array = np.asarray(audio)
    if array.dtype == np.int16:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise BadAudioError("the audio contains NaN or infinity; give samples in [-1, 1]")
    else:
        raise BadAudioError(f"audio arrays must be float32 or int16, not {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(-1, channels or 1) if len(array) % (channels or 1) == 0 else None
        if array is None:
            raise BadAudioError(f"a flat array of {channels} channels must hold a whole number of samples each")
    elif array.ndim != 2 or (channels is not None and array.shape[1] != channels):
        raise BadAudioError(f"audio arrays must be (n,) or (n, channels), not shape {np.shape(audio)}"
                            + (f" with {channels} channels" if channels else ""))
    check_format(sample_rate, array.shape[1])
    return array


def check_format(sample_rate: int | None, channels: int) -> None:
    """BadAudioError unless sample_rate and channels are usable."""
    if sample_rate is None:
        raise BadAudioError("raw audio needs its sample_rate (e.g. sample_rate=16000)")
    if not MIN_RATE_HZ <= sample_rate <= MAX_RATE_HZ:
        raise BadAudioError(f"sample rate {sample_rate} Hz is out of range ({MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadAudioError(f"{channels} channels is out of range (1-{MAX_CHANNELS})")


def to_float(samples: np.ndarray) -> np.ndarray:
    """(n, channels) int16 or float32 -> float32 in [-1, 1], same shape."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return np.clip(samples, -1.0, 1.0)


def to_pcm16(samples: np.ndarray) -> bytes:
    """(n, channels) int16 or float32 -> interleaved little-endian PCM16 bytes."""
    if samples.dtype != np.int16:
        samples = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    return samples.astype("<i2", copy=False).tobytes()
