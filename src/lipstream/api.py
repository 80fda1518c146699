"""The two-line Python API: open an avatar, render audio through it, get frames.

    import lipstream
    with lipstream.open("default") as avatar:
        for frame in avatar.render("speech.wav"):      # path | samples | bytes | iterable of chunks
            show(frame.image)                          # RGB uint8; frame.audio; frame.pts

A path, bytes or array is rendered as one clip. An iterable of chunks (arrays of float32 16 kHz
samples, or raw PCM16 bytes at 16 kHz mono) is a live stream: frames come out as soon as their
audio and the driver's look-ahead have arrived. Closing the iterator stops the work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.audio.io import load_audio
from lipstream.avatar.resolve import resolve_avatar
from lipstream.errors import BadAudioError
from lipstream.motion.drivers import DEFAULT_DRIVER, get_driver
from lipstream.motion.params import MouthTrack
from lipstream.motion.streaming import StreamingDriver
from lipstream.pipeline import drive, output_fps
from lipstream.render.base import create_renderer


@dataclass
class Frame:
    """One output frame: image (H, W, 3) uint8 RGB, the float32 16 kHz samples it shows,
    its index on the clock, and its presentation time in seconds."""

    index: int
    image: np.ndarray
    audio: np.ndarray
    pts: float


class Avatar:
    """An opened avatar with a renderer and a driver; use as a context manager."""

    def __init__(self, avatar: str | os.PathLike, *, renderer: str = "auto", driver: str = DEFAULT_DRIVER,
                 fps: float | None = None, still: bool = False):
        self.package = resolve_avatar(avatar, fps=fps or 25.0)
        self.fps = output_fps(self.package, fps)
        self.clock = FrameClock(self.fps)
        self.driver_name = driver
        self._renderer = create_renderer(renderer, self.package, still=still)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return self.package.size

    def render(self, audio, sample_rate: int | None = None) -> Iterator[Frame]:
        """Frames for `audio`: a path, bytes of a file, an array (give sample_rate unless 16 kHz
        mono float32), or an iterable of chunks (a live stream, see the module docstring)."""
        if isinstance(audio, (str, os.PathLike, bytes, np.ndarray)):
            samples = load_audio(audio, sample_rate or (SAMPLE_RATE if isinstance(audio, np.ndarray) else None))
            track = drive(samples, self.fps, self.driver_name)
            yield from self._frames(track, samples)
        elif isinstance(audio, Iterable):
            yield from self._render_stream(audio, sample_rate or SAMPLE_RATE)
        else:
            raise BadAudioError(f"can't render audio of type {type(audio).__name__}; give a path, bytes, "
                                "an array of samples or an iterable of chunks")

    def _render_stream(self, chunks: Iterable, sample_rate: int) -> Iterator[Frame]:
        streaming = StreamingDriver(get_driver(self.driver_name, self.fps), self.fps)
        audio = _SampleBuffer()
        for chunk in chunks:
            samples = _chunk_samples(chunk, sample_rate)
            audio.append(samples)
            yield from self._stream_frames(streaming.push(samples), streaming.next_frame, audio)
        yield from self._stream_frames(streaming.flush(), streaming.next_frame, audio)

    def _stream_frames(self, rows: np.ndarray, next_frame: int, audio: "_SampleBuffer") -> Iterator[Frame]:
        first = next_frame - len(rows)
        for i, row in enumerate(rows):
            k = first + i
            start, end = self.clock.frame_span(k)
            yield Frame(k, self._renderer.render_frame(k, row), audio.take(start, end), self.clock.frame_time_s(k))

    def _frames(self, track: MouthTrack, samples: np.ndarray) -> Iterator[Frame]:
        for k, image in enumerate(self._renderer.render(track)):
            start, end = self.clock.frame_span(k)
            yield Frame(k, image, samples[start:end], self.clock.frame_time_s(k))

    def close(self) -> None:
        """Release the avatar's memory maps."""
        self._renderer = None
        self.package = None

    def __enter__(self) -> "Avatar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(avatar: str | os.PathLike = "default", **options) -> Avatar:  # noqa: A001 - the API's verb
    """Open an avatar ('default', a package directory, or a photo/video) for rendering.

    Options: renderer ("auto", "warp", "bank", "static"), driver, fps, still.
    """
    return Avatar(avatar, **options)


class _SampleBuffer:
    """Audio of a stream kept only until its frames are out; indices are global sample numbers."""

    def __init__(self):
        self._samples = np.zeros(0, np.float32)
        self._start = 0

    def append(self, samples: np.ndarray) -> None:
        self._samples = np.concatenate([self._samples, samples])

    def take(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) (zero-padded past the end of the stream), forgetting those before `end`."""
        out = self._samples[start - self._start : end - self._start]
        out = np.pad(out, (0, (end - start) - len(out)))
        self._samples = self._samples[end - self._start :]
        self._start = end
        return out


def _chunk_samples(chunk, sample_rate: int) -> np.ndarray:
    """A stream chunk as float32 mono 16 kHz: PCM16 bytes or an array at `sample_rate`."""
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        if len(chunk) % 2:
            raise BadAudioError("PCM16 chunks must have an even number of bytes")
        chunk = np.frombuffer(chunk, np.int16)
    return load_audio(np.asarray(chunk), sample_rate=sample_rate) if len(chunk) else np.zeros(0, np.float32)
