"""The two-line Python API: open an avatar, render audio through it, get frames.

    import lipstream
    with lipstream.open("default") as avatar:
        frames, info = avatar.render("speech.wav")     # path | file object | samples | PCM16 bytes | iterable
        for frame in frames:
            show(frame.image)                          # RGB uint8; frame.audio; frame.pts * frame.time_base

Audio is a path or a binary file object holding a media file, or raw samples with their
sample_rate: an array (n,) / (n, channels) of float in [-1, 1] or int16, or `bytes` of raw PCM16
(little-endian, interleaved). `bytes` are always raw PCM16 in lipstream, never an encoded file.
An iterable of raw chunks is a live stream: frames come out as soon as their audio and the
driver's look-ahead have arrived, and closing the iterator stops the work. For full control
(push_audio / flush / interrupt, idle frames, an async iterator) open a `session()`.
Every frame carries the exact samples of the input it shows, at the input's rate and layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lipstream.audio.clock import FrameClock
from lipstream.audio.io import read_audio
from lipstream.audio.pcm import PCM_TYPES
from lipstream.avatar.resolve import resolve_avatar
from lipstream.errors import BadAudioError
from lipstream.session import Clock, Frame, Preset, Session
from lipstream.session.size import output_fps, output_size

__all__ = ["Avatar", "Frame", "RenderInfo", "open"]


@dataclass(frozen=True)
class RenderInfo:
    """What `render` does: renderer and driver chosen, frame rate, size (width, height), and
    for a whole clip its frame count and duration (None for a stream, not known in advance),
    with the input's sample rate and channels."""

    renderer: str
    driver: str
    fps: float
    size: tuple[int, int]
    frames: int | None
    duration_s: float | None
    sample_rate: int | None
    channels: int | None


class Avatar:
    """An opened avatar; use as a context manager. See `open` for the options."""

    def __init__(self, avatar: str | os.PathLike = "default", *, renderer: str = "auto", driver: str | None = None,
                 fps: float | None = None, size: tuple[int | None, int | None] | None = None, still: bool = False):
        self.package = resolve_avatar(avatar, fps=fps or 25.0)
        self.fps = output_fps(self.package, fps)
        self.size = output_size(self.package.size, *(size or (None, None)), even=False)
        self.renderer, self.driver, self.still = renderer, driver, still

    def session(self, *, fps: float | None = None, size: tuple[int | None, int | None] | None = None,
                driver: str | None = None, renderer: str | None = None, lookahead: float | None = None,
                clock: Clock | None = None, preset: str | Preset | None = None,
                idle_frames: bool = True) -> Session:
        """A live push session (lipstream.session.Session) on this avatar: push_audio / flush /
        interrupt in, frames out (for frame in session / async for). Options default to the
        avatar's; lookahead (s) and preset set its latency; clock replaces real time (tests)."""
        self._check_open()
        return Session(self.package, fps=fps or self.fps, size=size or self.size, driver=driver or self.driver,
                       renderer=renderer or (None if self.renderer == "auto" else self.renderer), lookahead=lookahead,
                       clock=clock, preset=preset, still=self.still, idle_frames=idle_frames)

    def render(self, audio, sample_rate: int | None = None, channels: int | None = None
               ) -> tuple[Iterator[Frame], RenderInfo]:
        """(frames, info) for `audio` (see the module docstring); frames are rendered as they are read."""
        self._check_open()
        options = dict(fps=self.fps, size=self.size, driver=self.driver, renderer=self.renderer, still=self.still)
        if isinstance(audio, (str, os.PathLike, *PCM_TYPES)) or hasattr(audio, "read") or hasattr(audio, "dtype"):
            samples, rate = read_audio(audio, sample_rate, channels)
            session = Session(self.package, live=False, refuse_silence=True, **options)
            session.push_audio(samples, rate)
            session.end()
            info = self._info(session, len(samples), rate, samples.shape[1])
            return _closing(session, iter(session)), info
        if isinstance(audio, Iterable):
            if sample_rate is None:
                raise BadAudioError("a stream of raw chunks needs their sample_rate (e.g. sample_rate=24000)")
            session = Session(self.package, idle_frames=False, deadlines=False, **options)
            return _closing(session, _stream(session, audio, sample_rate, channels)), self._info(session)
        raise BadAudioError(f"can't render audio of type {type(audio).__name__}; give a path, a file object, "
                            "samples or PCM16 bytes with their sample_rate, or an iterable of chunks")

    def close(self) -> None:
        """Release the avatar's memory maps."""
        self.package = None

    def _check_open(self) -> None:
        if self.package is None:
            raise ValueError("this avatar is closed")

    def _info(self, session: Session, n: int | None = None, rate: int | None = None,
              channels: int | None = None) -> RenderInfo:
        frames = None if n is None else FrameClock(session.fps, rate).frame_count(n)
        return RenderInfo(session.renderer, session.driver_name, session.fps, session.size, frames,
                          None if n is None else n / rate, rate, channels)

    def __enter__(self) -> Avatar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(avatar: str | os.PathLike = "default", *, renderer: str = "auto", driver: str | None = None,  # noqa: A001
         fps: float | None = None, size: tuple[int | None, int | None] | None = None, still: bool = False) -> Avatar:
    """Open an avatar for rendering.

    avatar: "default" (the bundled portrait), an avatar package directory, or a photo/video of
    one face (prepared on first use and cached). renderer: "auto" (bank for a video avatar,
    warp for a photo), "static", "warp", "bank" or "neural" (a trained video avatar). driver:
    "energy", "viseme" or "phoneme" (None: phoneme offline, the preset's live). fps: output
    frame rate (None: the avatar's; a video avatar only plays at its own). size: (width,
    height) of the frames, either may be None to keep the aspect ratio. still: no blinks or
    head sway on a photo. Raises BadAvatarError / NotSupportedError with what to change.
    """
    return Avatar(avatar, renderer=renderer, driver=driver, fps=fps, size=size, still=still)


def _stream(session: Session, chunks: Iterable, sample_rate: int, channels: int | None) -> Iterator[Frame]:
    for chunk in chunks:
        session.push_audio(chunk, sample_rate, channels)
        yield from (item for item in session.poll() if isinstance(item, Frame))
    session.end()
    yield from session


def _closing(session: Session, frames: Iterator[Frame]) -> Iterator[Frame]:
    """`frames`, closing the session when they end or the iterator is closed (an interruption)."""
    try:
        yield from frames
    finally:
        session.close()
