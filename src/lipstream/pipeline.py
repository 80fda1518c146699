"""The offline pipeline on one clock: audio -> mouth parameters -> frames -> mp4.

Frame k shows audio samples FrameClock(fps).frame_span(k); the video has exactly as many
frames as the audio needs, and the audio is muxed from time 0, so they stay aligned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.io import AudioSource, load_audio
from lipstream.audio.vad import speech_mask
from lipstream.avatar.package import AvatarPackage
from lipstream.errors import BadAudioError, NotSupportedError
from lipstream.motion.drivers import DEFAULT_DRIVER, get_driver
from lipstream.motion.params import MouthTrack
from lipstream.render.base import Renderer, create_renderer
from lipstream.sinks.mp4 import Mp4Writer, check_writable, fps_fraction

Progress = Callable[[int, int], None]


@dataclass
class RenderOptions:
    """What to render: fps None = the avatar's; size (width, height) None = the avatar's;
    renderer_options go to the renderer (e.g. the neural renderer's arch and variant)."""

    fps: float | None = None
    size: tuple[int, int] | None = None
    driver: str = DEFAULT_DRIVER
    renderer: str = "auto"
    quality: str = "standard"
    still: bool = False
    renderer_options: dict = field(default_factory=dict)


@dataclass
class RenderSummary:
    """What a render produced, with the time spent per stage (milliseconds, whole clip).

    Encoding overlaps rendering on another thread; `encode_wait` is the time the render loop
    waited for the encoder, not the encoder's own time.
    """

    path: Path | None
    frames: int
    duration_s: float
    fps: float
    size: tuple[int, int]
    driver: str
    renderer: str
    stage_ms: dict[str, float] = field(default_factory=dict)


def output_fps(avatar: AvatarPackage, fps: float | None) -> float:
    """The output frame rate: a photo takes any; a video avatar plays at the rate it was prepared at."""
    if fps is None or avatar.kind == "image":
        return float(fps_fraction(fps or avatar.fps))
    if abs(fps - avatar.fps) > 1e-6:
        raise NotSupportedError(
            f"avatar {avatar.name} was prepared at {avatar.fps:g} fps; prepare its video again with --fps {fps:g}"
        )
    return fps


def drive(audio: np.ndarray, fps: float, driver: str) -> MouthTrack:
    """Mouth parameters for every frame of `audio` (float32 mono 16 kHz); refuses silent audio."""
    if not speech_mask(audio, fps).any():
        raise BadAudioError("the audio is silent (no speech found); give audio with someone speaking in it")
    return get_driver(driver, fps).drive(audio)


def render_frames(renderer: Renderer, track: MouthTrack, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 RGB for a track, resized to size (width, height) if given."""
    for frame in renderer.render(track):
        if size and (frame.shape[1], frame.shape[0]) != tuple(size):
            frame = cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA)
        yield frame


def render_file(
    avatar: AvatarPackage,
    audio: AudioSource,
    out_path: str | Path,
    options: RenderOptions | None = None,
    progress: Progress | None = None,
) -> RenderSummary:
    """Render `audio` spoken by `avatar` into an mp4 at out_path (written atomically).

    audio: a path, the bytes of a file, or float32 mono 16 kHz samples.
    """
    options = options or RenderOptions()
    out_path = Path(out_path)
    check_writable(out_path)
    stage_ms: dict[str, float] = {}
    with _timed(stage_ms, "decode"):
        samples = load_audio(audio, SAMPLE_RATE if isinstance(audio, np.ndarray) else None)
    fps = output_fps(avatar, options.fps)
    with _timed(stage_ms, "drive"):
        track = drive(samples, fps, options.driver)
    size = options.size or avatar.size
    renderer = create_renderer(options.renderer, avatar, still=options.still, **options.renderer_options)
    frames = render_frames(renderer, track, size)
    writer = Mp4Writer(out_path, fps, size, samples, quality=options.quality)
    try:
        for k in range(len(track)):
            with _timed(stage_ms, "render"):
                frame = next(frames)
            with _timed(stage_ms, "encode_wait"):
                writer.write(frame)
            if progress:
                progress(k + 1, len(track))
        with _timed(stage_ms, "encode_wait"):
            writer.close()
    except BaseException:
        writer.abort()
        raise
    return RenderSummary(
        path=out_path,
        frames=len(track),
        duration_s=len(samples) / SAMPLE_RATE,
        fps=fps,
        size=tuple(size),
        driver=options.driver,
        renderer=renderer.name,
        stage_ms=stage_ms,
    )


class _timed:
    """Adds the elapsed milliseconds of a `with` block to totals[name]."""

    def __init__(self, totals: dict[str, float], name: str):
        self.totals, self.name = totals, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.totals[self.name] = self.totals.get(self.name, 0.0) + (time.perf_counter() - self.start) * 1e3
