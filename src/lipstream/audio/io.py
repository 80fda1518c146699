"""Decode any audio (or the audio track of a video): as it is (`read_audio`), or to 16 kHz mono
float32 for analysis (`load_audio`).

PyAV is used rather than an ffmpeg subprocess: it ships FFmpeg inside its wheel, so every
common format (wav, flac, mp3, m4a/aac, ogg/opus, mp4/mkv/webm tracks) decodes with no
system package, in-process, and errors surface as Python exceptions we can explain.

A source is a path or a binary file object holding a media file, or raw samples: an array, or
`bytes` of raw PCM16 (lipstream.audio.pcm), each with its sample_rate.

A file's length is checked twice: from its header before decoding (a 3-hour silent FLAC is a
couple of MB and refused at once), and while decoding (a header may lie), stopping at the limit.
"""

from __future__ import annotations

import contextlib
import os
import typing
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.pcm import PCM_TYPES, as_samples, check_format
from lipstream.errors import BadAudioError

MAX_DURATION_S = 30 * 60

AudioSource = str | os.PathLike | typing.BinaryIO | bytes | np.ndarray


def read_audio(source: AudioSource, sample_rate: int | None = None,
               channels: int | None = None) -> tuple[np.ndarray, int]:
    """The audio as it is: ((n, channels) samples, sample rate). Decoded files give int16 when
    stored as 16-bit (bit-exact), else float32 in [-1, 1]; raw samples (an array, or PCM16
    bytes) are checked and need sample_rate. BadAudioError for unreadable, empty or too long audio."""
    if isinstance(source, (np.ndarray, *PCM_TYPES)):
        samples, rate, name = as_samples(source, sample_rate, channels), sample_rate, "the audio samples"
    else:
        name = _name(source)
        with _opened(source, name) as container:
            stream = container.streams.audio[0]
            rate, layout = stream.rate, stream.layout.name
            channels = stream.channels
            check_format(rate, channels)
            packed = "s16" if stream.format.name in ("s16", "s16p") else "flt"
            resampler = av.AudioResampler(format=packed, layout=layout, rate=rate)  # a format change only
            parts = [f.to_ndarray().reshape(-1, channels) for frame in _decoded_frames(container)
                     for f in resampler.resample(_unstamped(frame))]
            parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(None)]
        samples = np.concatenate(parts) if parts else np.zeros((0, channels), np.float32)
        if samples.dtype != np.int16:
            samples = np.clip(samples.astype(np.float32, copy=False), -1.0, 1.0)
    _check_length(len(samples), rate, name)
    return samples, rate


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Return the audio as float32 mono samples in [-1, 1] at 16 kHz, shape (n,).

    `source` is a path or binary file object of any audio or video file, or raw samples: an
    array (n,) mono or (n, channels), float in [-1, 1] or int16, or PCM16 mono bytes, at
    `sample_rate` (required for raw samples). Raises BadAudioError for unreadable, empty or
    too long audio.
    """
    if isinstance(source, (np.ndarray, *PCM_TYPES)):
        if sample_rate is None:
            raise BadAudioError("raw samples need their sample_rate (e.g. sample_rate=16000); "
                                "give a path or a file object for an encoded file")
        name = "the audio samples"
        raw = as_samples(source, sample_rate)
        _check_length(len(raw), sample_rate, name)  # before resampling a too long input
        samples = resample(_array_to_mono_float(raw), sample_rate, SAMPLE_RATE)
    else:
        name = _name(source)
        samples = _decode_file(source, name)
    _check_length(samples.size, SAMPLE_RATE, name)
    return samples


def _check_length(n: int, rate: int, name: str) -> None:
    if n == 0:
        raise BadAudioError(f"{name} contains no audio samples; give a file with speech in it")
    if n > MAX_DURATION_S * rate:
        raise BadAudioError(
            f"{name} is {n / rate / 60:.1f} min long; the limit is "
            f"{MAX_DURATION_S // 60} min per input: split it into shorter files"
        )


def _name(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "the audio file object"


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


@contextlib.contextmanager
def _opened(source, name: str) -> Iterator[av.container.InputContainer]:
    """The media file opened for its audio; BadAudioError if it is missing, empty or undecodable."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise BadAudioError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise BadAudioError(f"{name} is an empty file")
        source = str(source)
    elif not hasattr(source, "read"):
        raise BadAudioError(f"can't read audio from a {type(source).__name__}; give a path, a binary file object, "
                            "an array of samples or PCM16 bytes with their sample_rate")
    try:
        with av.open(source, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise BadAudioError(f"{name} has no audio track; give an audio file or a video with sound")
            claimed_s = _header_duration_s(container)
            if claimed_s is not None and claimed_s > MAX_DURATION_S:
                raise BadAudioError(f"{name} is {claimed_s / 60:.1f} min long; the limit is {MAX_DURATION_S // 60} "
                                    "min per input: split it into shorter files")
            yield container
    except av.FFmpegError as exc:
        raise BadAudioError(f"{name} could not be decoded as audio ({exc}); is it a media file?") from exc


def _decode_file(source, name: str) -> np.ndarray:
    with _opened(source, name) as container:
        chunks = list(_resampled(_decoded_frames(container)))
    if not chunks:
        return np.zeros(0, np.float32)
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32)


def audio_duration_s(path: str | os.PathLike) -> float | None:
    """The duration (s) of the file's first audio stream as its header states it, without
    decoding; None if the header doesn't say or the file can't be opened (decoding will tell)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return _header_duration_s(container) if container.streams.audio else None
    except av.FFmpegError:
        return None


def _header_duration_s(container: av.container.InputContainer) -> float | None:
    """The first audio stream's duration as its header states it (None if it doesn't)."""
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decoded_frames(container: av.container.InputContainer) -> Iterator[av.AudioFrame]:
    """Decode the first audio stream, skipping packets the decoder rejects; stop once past
    MAX_DURATION_S (the caller refuses that length), whatever the header said."""
    stream = container.streams.audio[0]
    decoded_s = 0.0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue
        for frame in frames:
            yield frame
            decoded_s += frame.samples / max(frame.sample_rate, 1)
        if decoded_s > MAX_DURATION_S:
            return


def _resampled(frames: Iterator[av.AudioFrame]) -> Iterator[np.ndarray]:
    """Resample decoded frames to 16 kHz mono float32 chunks, flushing the resampler at the end."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in frames:
        for out in resampler.resample(_unstamped(frame)):
            yield out.to_ndarray().reshape(-1)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def _unstamped(frame: av.AudioFrame) -> av.AudioFrame:
    """The frame without its pts: the resampler then joins frames back to back (gaps and
    overlaps in a file's timestamps must not add or drop samples)."""
    frame.pts = None
    return frame
