"""A server session: the one core (lipstream.session.Session) with the socket's needs around it.

    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=256), avatar)
    events = pipeline.audio(pcm_bytes, AudioFormat(48000, 2, "pcm16"), arrived_s=time.monotonic())

It only translates: a client's chunk bytes into samples for `Session.push_audio`, the session's
frames into encoded `FrameOut`s (JPEG, H.264, or raw RGB for WebRTC) and its notices into
`Status` / `Dropped` events; the echoed audio (`returnAudio`) is each chunk as it came, stamped
with its pts. With `frame_audio` (WebRTC) each frame carries its own exact audio instead, and a
late frame is sent with the last image rather than dropped, so no audio is lost. Silence,
look-ahead, deadlines (late frames are dropped for a socket: it has a frame budget), idle
frames, fallback and resizing are all the session's. What goes on the wire can be lowered for a
slow link (`set_level`: JPEG quality and scale, frames per second); frames left out for the
frame rate are counted as `Dropped(n, "thinned")`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipstream.audio.pcm import to_pcm16
from lipstream.avatar.package import AvatarPackage
from lipstream.errors import NotSupportedError
from lipstream.session import Clock, Frame, Notice, Preset, Session
from lipstream.session.presets import DEFAULT_PRESET
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.encode import FORMATS, RAW, FrameThinner, OutputLevel, make_encoder
from lipstream.stream.events import AudioOut, Dropped, Event, FrameOut, Status


@dataclass
class SessionConfig:
    """What a client asked for; None means the preset's or the avatar's choice."""

    avatar: str = "default"
    preset: str = DEFAULT_PRESET
    format: str = "jpeg"
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    renderer: str | None = None
    driver: str | None = None
    idle_frames: bool = True
    silent_frames: bool | None = None  # frames of silent audio in a turn; None: as idle_frames
    return_audio: bool = False
    frame_audio: bool = False  # each frame carries its exact audio (and late frames are not dropped)


class SessionPipeline:
    """Chunks of one client -> events (see the module docstring). Not thread-safe."""

    def __init__(self, config: SessionConfig, avatar: AvatarPackage, clock: Clock | None = None,
                 preset: Preset | None = None):
        """`preset` overrides config.preset with a custom trade-off (benchmarks, experiments)."""
        if config.format not in (*FORMATS, RAW):
            raise NotSupportedError(f"output format {config.format!r} is not supported; use jpeg or h264")
        self.config = config
        self.session = Session(avatar, fps=config.fps, size=(config.width, config.height), driver=config.driver,
                               renderer=config.renderer, clock=clock, preset=preset or config.preset,
                               idle_frames=config.idle_frames, drop_late=not config.frame_audio, skip_silent=not (config.idle_frames if config.silent_frames is None else config.silent_frames),
                               even_size=config.format == "h264")
        self.encoder = make_encoder(config.format, self.session.size, self.session.fps, self.session.preset)
        self.thinner = FrameThinner(self.session.fps)

    def info(self) -> dict:
        """What the session runs with (sent to the client when it starts)."""
        s = self.session
        width, height = s.size
        return {
            "avatar": self.config.avatar, "preset": s.preset.name, "format": self.config.format,
            "fps": s.fps, "width": width, "height": height, "renderer": s.renderer,
            "rendererReason": s.chain.reason, "driver": s.driver_name, "lookaheadMs": round(s.lookahead_s * 1000, 1),
            "blockMs": s.preset.block_ms, "deadlineMs": s.preset.deadline_ms,
            "idleFrames": self.config.idle_frames, "returnAudio": self.config.return_audio,
        }

    def audio(self, data: bytes, fmt: AudioFormat, arrived_s: float) -> list[Event]:
        """Take one chunk and return the frames (and other events) it makes ready."""
        return self.add_audio(data, fmt, arrived_s) + self.process()

    def add_audio(self, data: bytes, fmt: AudioFormat, arrived_s: float) -> list[Event]:
        """Take one chunk without making frames (`process` makes them: chunks that queued up
        while the machine was busy are then driven once, not once each)."""
        samples = fmt.samples(data)
        pts = self.session.push_audio(samples, fmt.sample_rate, arrived_s=arrived_s)
        if self.config.return_audio and len(samples):
            return [AudioOut(pts, to_pcm16(samples), fmt.sample_rate, fmt.channels)]
        return []

    def process(self, limit: int | None = None) -> list[Event]:
        """What the session has ready now (frames, turns, fallbacks, drops), at most `limit`
        frames (each rendered as it is taken: a caller that sends them one by one sends the first
        after one render, not after the whole block); frames left out for a lower frame rate are
        counted as one `Dropped(n, "thinned")` at the end."""
        events, thinned = [], 0
        for item in self.session.poll(limit):
            if isinstance(item, Frame) and not self.thinner.keep():
                thinned += 1
                continue
            events.append(self._event(item))
        return events + ([Dropped(thinned, "thinned")] if thinned else [])

    tick = process  # time passing: a quiet turn ends, an idle frame falls due

    def next_wakeup(self) -> float | None:
        """Clock time at which `tick` has something to do."""
        return self.session.next_wakeup()

    def flush(self) -> list[Event]:
        """End of turn: frames for all audio received, then idle."""
        self.session.flush()
        return self.process()

    def switch(self, renderer: str | None = None, driver: str | None = None,
               avatar: AvatarPackage | None = None) -> list[Event]:
        """Change renderer, driver and/or avatar from the next frame on."""
        self.session.switch(renderer, driver, avatar)
        if avatar is not None:
            self.config.avatar = avatar.name
        return self.process()

    def set_level(self, level: OutputLevel) -> None:
        """Frames from the next one on go out at `level` (quality, scale, frame rate)."""
        self.encoder.set_level(level)
        self.thinner.set_fps(level.fps)

    def request_keyframe(self) -> None:
        """Make the next frame independently decodable (frames were dropped downstream)."""
        self.encoder.request_keyframe()

    def _event(self, item: Frame | Notice) -> Event:
        if isinstance(item, Frame):
            data, key = self.encoder.encode(item.image, item.pts)
            audio = (to_pcm16(item.audio), item.sample_rate, item.channels) if self.config.frame_audio else (b"", 0, 0)
            return FrameOut(item.index, item.pts, item.span, data, key, item.idle, item.ready_s, item.deadline_s,
                            item.renderer, item.mouth, item.turn_arrived_s, *audio, item.interpolated)
        if item.event == "dropped":
            return Dropped(item.detail["count"], item.detail["reason"])
        return Status(item.event, item.detail)
