"""Offline rendering to a file: the push session with all of the audio pushed at once.

    summary = render_file(avatar, "speech.wav", "out.mp4")

The audio is read as it is (its own rate and channels), pushed whole into a `Session` with
`live=False` and ended; the frames come out with their exact slices of that audio, and the file
gets exactly those samples back (AAC at the input rate by default). No loop of its own: what
the video shows and when is decided by the session, as for live streams.

With `live_preset`, the audio is pushed as a live session of that preset gets it (LIVE_CHUNK_MS
chunks in simulated real time, frames decided on the preset's look-ahead, no deadlines), so the
file shows what a live stream of that preset looks like, for `lipstream eval` to measure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lipstream.audio.clock import FrameClock
from lipstream.audio.io import AudioSource, read_audio
from lipstream.avatar.package import AvatarPackage
from lipstream.errors import NotSupportedError
from lipstream.session import Clock, Frame, ManualClock, RealClock, Session
from lipstream.sinks.mp4 import Mp4Writer, check_audio_codec, check_writable, container_format

Progress = Callable[[int, int], None]
LIVE_CHUNK_MS = 20.0


@dataclass
class RenderOptions:
    """What to render: fps None = the avatar's; size (width, height) None = the avatar's;
    driver None = the most accurate; audio_codec "aac", "pcm", "flac" or "copy" (the input
    file's audio packets unchanged); renderer_options go to the renderer (e.g. the neural
    renderer's arch and variant)."""

    fps: float | None = None
    size: tuple[int, int] | None = None
    driver: str | None = None
    renderer: str = "auto"
    quality: str = "standard"
    still: bool = False
    audio_codec: str = "aac"
    renderer_options: dict = field(default_factory=dict)
    live_preset: str | None = None


@dataclass
class RenderSummary:
    """What a render produced, with the time spent per stage (milliseconds, whole clip).

    Encoding overlaps rendering on another thread; `encode_wait` is the time the render loop
    waited for the encoder, not the encoder's own time. `render` includes driving the audio.
    """

    path: Path | None
    frames: int
    duration_s: float
    fps: float
    size: tuple[int, int]
    driver: str
    renderer: str
    sample_rate: int = 0
    channels: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)


def render_file(avatar: AvatarPackage, audio: AudioSource, out_path: str | Path, options: RenderOptions | None = None,
                progress: Progress | None = None, sample_rate: int | None = None,
                clock: Clock | None = None) -> RenderSummary:
    """Render `audio` spoken by `avatar` into a video file at out_path (written atomically).

    audio: a path or binary file object of a media file, or raw samples (an array, or PCM16
    bytes) with their sample_rate. Raises BadAudioError for silent or unreadable audio.
    """
    options = options or RenderOptions()
    out_path = Path(out_path)
    check_writable(out_path)
    container_format(out_path)
    check_audio_codec(out_path, options.audio_codec)
    copy_from = audio if options.audio_codec == "copy" else None
    if copy_from is not None and not isinstance(copy_from, (str, Path)):
        raise NotSupportedError("--audio-codec copy needs the audio as a file path")
    clock = clock or RealClock()
    stage_ms: dict[str, float] = {}
    with _timed(clock, stage_ms, "decode"):
        samples, rate = read_audio(audio, sample_rate)
    live = options.live_preset is not None
    session = Session(avatar, fps=options.fps, size=options.size, driver=options.driver, renderer=options.renderer,
                      still=options.still, renderer_options=options.renderer_options, live=live,
                      preset=options.live_preset, deadlines=False, idle_frames=False,
                      refuse_silence=not live, even_size=True, clock=ManualClock(0.0) if live else clock)
    total = FrameClock(session.fps, rate).frame_count(len(samples))
    if live:
        frames = _pushed_live(session, samples, rate)
    else:
        with _timed(clock, stage_ms, "render"):
            session.push_audio(samples, rate)
            session.end()
        frames = iter(session)
    writer = Mp4Writer(out_path, session.fps, session.size, rate, samples.shape[1], quality=options.quality,
                       audio_codec="aac" if copy_from is not None else options.audio_codec, copy_audio_from=copy_from)
    done = 0
    try:
        while True:
            with _timed(clock, stage_ms, "render"):
                frame = next(frames, None)
            if frame is None:
                break
            with _timed(clock, stage_ms, "encode_wait"):
                writer.write(frame.image, frame.audio)
            done += 1
            if progress:
                progress(done, max(total, done))
        with _timed(clock, stage_ms, "encode_wait"):
            writer.close()
    except BaseException:
        writer.abort()
        raise
    return RenderSummary(path=out_path, frames=done, duration_s=len(samples) / rate, fps=session.fps,
                         size=session.size, driver=session.driver_name, renderer=session.renderer,
                         sample_rate=rate, channels=samples.shape[1], stage_ms=stage_ms)


def _pushed_live(session: Session, samples, rate: int) -> Iterator[Frame]:
    """Frames of `session` (on a ManualClock) fed `samples` (n, channels) in LIVE_CHUNK_MS chunks,
    each frame made as soon as the chunks so far allow it, as in a live stream."""
    chunk = max(1, int(rate * LIVE_CHUNK_MS / 1000))
    for start in range(0, len(samples), chunk):
        session.clock.advance(chunk / rate)
        session.push_audio(samples[start : start + chunk], rate)
        yield from (item for item in session.poll() if isinstance(item, Frame))
    session.end()
    yield from session


class _timed:
    """Adds the elapsed milliseconds (on `clock`) of a `with` block to totals[name]."""

    def __init__(self, clock: Clock, totals: dict[str, float], name: str):
        self.clock, self.totals, self.name = clock, totals, name

    def __enter__(self) -> None:
        self.start = self.clock.now()

    def __exit__(self, *exc) -> None:
        self.totals[self.name] = self.totals.get(self.name, 0.0) + (self.clock.now() - self.start) * 1e3
