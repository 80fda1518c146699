"""Decode any audio (or the audio track of a video) to 16 kHz mono float32.

PyAV is used rather than an ffmpeg subprocess: it ships FFmpeg inside its wheel, so every
common format (wav, flac, mp3, m4a/aac, ogg/opus, mp4/mkv/webm tracks) decodes with no
system package, in-process, and errors surface as Python exceptions we can explain.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.errors import BadAudioError

MAX_DURATION_S = 30 * 60

AudioSource = str | os.PathLike | bytes | np.ndarray


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Return the audio as float32 mono samples in [-1, 1] at 16 kHz, shape (n,).

    `source` is a path to any audio or video file, the bytes of such a file, or an array
    of samples: (n,) mono or (n, channels), float in [-1, 1] or int16, at `sample_rate`
    (required for arrays). Raises BadAudioError for unreadable, empty or too long audio.
    """
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise BadAudioError("an array of samples needs its sample_rate (e.g. sample_rate=16000)")
        samples = _array_to_mono_float(source)
        samples = resample(samples, sample_rate, SAMPLE_RATE)
        name = "the audio array"
    else:
        name = str(source) if not isinstance(source, bytes) else "the audio bytes"
        samples = _decode_file(source, name)
    if samples.size == 0:
        raise BadAudioError(f"{name} contains no audio samples; give a file with speech in it")
    if samples.size > MAX_DURATION_S * SAMPLE_RATE:
        raise BadAudioError(
            f"{name} is {samples.size / SAMPLE_RATE / 60:.1f} min long; the limit is "
            f"{MAX_DURATION_S // 60} min per input: split it into shorter files"
        )
    return samples


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of float32 mono samples (polyphase filter)."""
    if rate_in == rate_out:
        return samples.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    return resample_poly(samples, rate_out // g, rate_in // g).astype(np.float32)


def _array_to_mono_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif not np.issubdtype(array.dtype, np.floating):
        raise BadAudioError(f"audio arrays must be float32 or int16, not {array.dtype}")
    if array.ndim == 2:
        array = array.mean(axis=1)
    elif array.ndim != 1:
        raise BadAudioError(f"audio arrays must be (n,) or (n, channels), not shape {array.shape}")
    return np.clip(array.astype(np.float32), -1.0, 1.0)


def _decode_file(source: str | os.PathLike | bytes, name: str) -> np.ndarray:
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise BadAudioError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise BadAudioError(f"{name} is an empty file")
    opened = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(opened, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise BadAudioError(f"{name} has no audio track; give an audio file or a video with sound")
            chunks = list(_resampled(_decoded_frames(container)))
    except av.FFmpegError as exc:
        raise BadAudioError(f"{name} could not be decoded as audio ({exc}); is it a media file?") from exc
    if not chunks:
        return np.zeros(0, np.float32)
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32)


def _decoded_frames(container: av.container.InputContainer) -> Iterator[av.AudioFrame]:
    """Decode the first audio stream, skipping packets the decoder rejects."""
    stream = container.streams.audio[0]
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            continue


def _resampled(frames: Iterator[av.AudioFrame]) -> Iterator[np.ndarray]:
    """Resample decoded frames to 16 kHz mono float32 chunks, flushing the resampler at the end."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in frames:
        frame.pts = None
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)
