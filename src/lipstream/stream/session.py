"""One real-time session on the one clock: PCM chunks in, encoded frames out, as soon as ready.

    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=256), avatar)
    events = pipeline.audio(pcm_bytes, AudioFormat(48000, 2, "pcm16"), arrived_s=time.monotonic())

Frame k shows audio samples FrameClock(fps).frame_span(k) of the audio received so far (after
resampling to 16 kHz); its pts is that span's first sample, never a wall-clock reading, so an
hour-long session ends as in sync as it began. A frame is made as soon as its audio and the
driver's look-ahead are in (or at the preset's block cadence), and dropped instead if it is
already past its deadline. Between turns (after a flush, or when audio stops arriving) the
session makes idle frames at the frame rate, paced from the time the turn ended (start + n /
fps, never by accumulated sleeps); they belong to no audio and do not move the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.avatar.package import AvatarPackage
from lipstream.errors import NotSupportedError
from lipstream.motion.drivers import get_driver
from lipstream.motion.streaming import StreamingDriver
from lipstream.pipeline import output_fps
from lipstream.select import machine_profiles
from lipstream.stream.audio_in import ArrivalLog, AudioFormat, StreamResampler
from lipstream.stream.encode import FORMATS, fit, make_encoder
from lipstream.stream.events import AudioOut, Dropped, Event, FrameOut, Status
from lipstream.stream.presets import DEFAULT_PRESET, Preset, get_preset
from lipstream.stream.render_chain import RenderChain

# A turn ends by itself when no audio has come for the last chunk's duration plus this.
END_OF_TURN_GRACE_S = 0.25
MIN_SIDE_PX = 32
MAX_SIDE_PX = 2048
MAX_UPSCALE = 2.0
ASPECT_TOLERANCE = 0.02
CLOSED_MOUTH_EPS = 1e-3


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
    return_audio: bool = False


def output_size(avatar_size: tuple[int, int], width: int | None, height: int | None, even: bool) -> tuple[int, int]:
    """(width, height) of the frames: the avatar's, or scaled keeping its aspect ratio."""
    aw, ah = avatar_size
    if width is None and height is None:
        width, height = aw, ah
    elif height is None:
        height = round(width * ah / aw)
    elif width is None:
        width = round(height * aw / ah)
    elif abs(width / height - aw / ah) > ASPECT_TOLERANCE * aw / ah:
        raise NotSupportedError(f"size {width}x{height} changes the avatar's aspect ratio ({aw}x{ah}); "
                                "give only width or height, or a size with the same shape")
    if even:
        width, height = width + width % 2, height + height % 2
    for side, limit in ((width, aw), (height, ah)):
        if not MIN_SIDE_PX <= side <= min(MAX_SIDE_PX, MAX_UPSCALE * limit):
            raise NotSupportedError(f"size {width}x{height} is out of range: {MIN_SIDE_PX} px to "
                                    f"{MAX_UPSCALE:g}x the avatar's {aw}x{ah}")
    return int(width), int(height)


class SessionPipeline:
    """Audio chunks -> frames for one client (see the module docstring). Not thread-safe."""

    def __init__(self, config: SessionConfig, avatar: AvatarPackage, now: Callable[[], float] = time.monotonic,
                 preset: Preset | None = None):
        """`preset` overrides config.preset with a custom trade-off (benchmarks, experiments)."""
        if config.format not in FORMATS:
            raise NotSupportedError(f"output format {config.format!r} is not supported; use jpeg or h264")
        self.config = config
        self.preset = preset or get_preset(config.preset)
        self.now = now
        self.fps = output_fps(avatar, config.fps)
        self.clock = FrameClock(self.fps)
        self.size = output_size(avatar.size, config.width, config.height, even=config.format == "h264")
        self.driver_name = config.driver or self.preset.driver
        p = self.preset
        self.driver = StreamingDriver(get_driver(self.driver_name, self.fps), self.fps, block_s=p.block_ms / 1000,
                                      context_s=p.context_ms / 1000, guard_s=p.guard_ms / 1000,
                                      max_cpu_share=p.driver_cpu_share)
        self.chain = RenderChain(avatar, config.renderer or p.renderer, 1.0 / self.fps, self.driver_name,
                                 machine_profiles())
        self.chain.renderer.render_frame(0, np.zeros(4, np.float32))  # first-call costs now, not on frame 0
        self.encoder = make_encoder(config.format, self.size, self.fps, p)
        self.resampler = StreamResampler()
        self.arrivals = ArrivalLog()
        self.speaking = False
        self.turns = 0
        self._turn_anchor = (0.0, 0)  # (arrival time, first sample) of the current turn
        self._last_arrival_s = 0.0
        self._last_chunk_s = 0.0
        self._idle_since_s = now()
        self._idle_made = 0  # idle frames due since _idle_since_s that were made or skipped
        self._idle_total = 0  # idle frames ever made: they advance the avatar's idle motion
        self._flush_s: float | None = None
        self._changes_seen = 0

    def info(self) -> dict:
        """What the session runs with (sent to the client when it starts)."""
        width, height = self.size
        return {
            "avatar": self.config.avatar, "preset": self.preset.name, "format": self.config.format,
            "fps": self.fps, "width": width, "height": height, "renderer": self.chain.name,
            "rendererReason": self.chain.reason,
            "driver": self.driver_name, "lookaheadMs": round(self.driver.lookahead * 1000 / SAMPLE_RATE, 1),
            "blockMs": self.preset.block_ms, "deadlineMs": self.preset.deadline_ms,
            "idleFrames": self.config.idle_frames, "returnAudio": self.config.return_audio,
        }

    # -- audio in -----------------------------------------------------------------------------

    def audio(self, data: bytes, fmt: AudioFormat, arrived_s: float) -> list[Event]:
        """Take one chunk and return the frames (and other events) it makes ready."""
        return self.add_audio(data, fmt, arrived_s) + self.process()

    def add_audio(self, data: bytes, fmt: AudioFormat, arrived_s: float) -> list[Event]:
        """Take one chunk without making frames (`process` makes them: chunks that queued up
        while the machine was busy are then driven once, not once each)."""
        samples = self.resampler.push(data, fmt)
        events: list[Event] = []
        if not self.speaking:
            self.speaking = True
            self.turns += 1
            self._turn_anchor = (arrived_s, self.driver.received)
            events.append(Status("turn_started", {"turn": self.turns, "audioMs": self._ms(self.driver.received)}))
        if self.config.return_audio and len(samples):
            events.append(AudioOut(self.driver.received, _pcm16(samples)))
        self.driver.append(samples)
        self.arrivals.add(self.driver.received, arrived_s)
        self._last_arrival_s = arrived_s
        self._last_chunk_s = len(data) / fmt.bytes_per_frame / fmt.sample_rate
        return events

    def process(self) -> list[Event]:
        """Frames for every row the driver has ready."""
        rows = self.driver.ready()
        return self._frames(self.driver.next_frame - len(rows), rows)

    def flush(self) -> list[Event]:
        """End of turn: frames for all audio received (the last frame may be partial), then idle."""
        if not self.speaking:
            return []
        now = self.now()
        tail = self.resampler.flush()
        if self.config.return_audio and len(tail):
            events: list[Event] = [AudioOut(self.driver.received, _pcm16(tail))]
        else:
            events = []
        self.driver.append(tail)
        self._flush_s = now
        rows = self.driver.flush()
        events += self._frames(self.driver.next_frame - len(rows), rows)
        self._flush_s = None
        self.arrivals.forget_before(self.driver.received + 1)
        self.speaking = False
        self._idle_since_s, self._idle_made = self.now(), 0
        events.append(Status("turn_ended", {"turn": self.turns, "audioMs": self._ms(self.driver.received)}))
        return events

    # -- time passing -------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """Monotonic time at which `tick` has something to do (end a turn, make an idle frame)."""
        if self.speaking:
            return self._last_arrival_s + self._last_chunk_s + END_OF_TURN_GRACE_S
        if self.config.idle_frames:
            return self._idle_since_s + (self._idle_made + 1) / self.fps
        return None

    def tick(self) -> list[Event]:
        """End a turn whose audio stopped coming; make the idle frame that is due, if any."""
        wake = self.next_wakeup()
        now = self.now()
        if wake is None or now < wake:
            return []
        if self.speaking:
            return self.flush()
        due = int((now - self._idle_since_s) * self.fps)  # idle frames due by now; make the latest
        self._idle_made = due
        return [self._idle_frame(self._idle_since_s + due / self.fps)]

    # -- requests -----------------------------------------------------------------------------

    def switch(self, renderer: str | None = None, driver: str | None = None) -> list[Event]:
        """Change renderer and/or driver from the next frame on."""
        if driver:
            self.driver.set_driver(get_driver(driver, self.fps))
            self.driver_name = driver
        if renderer:
            self.chain.switch(renderer)
        self._changes_seen = len(self.chain.changes)
        return [Status("switched", {"renderer": self.chain.name, "driver": self.driver_name})]

    def request_keyframe(self) -> None:
        """Make the next frame independently decodable (frames were dropped downstream)."""
        self.encoder.request_keyframe()

    # -- frames -------------------------------------------------------------------------------

    def _frames(self, first: int, rows: np.ndarray) -> list[Event]:
        events: list[Event] = []
        late = silent = 0
        for i, row in enumerate(rows):
            k = first + i
            ready = self.arrivals.time_of(self.driver.needed_sample(k))
            ready = self._flush_s if ready is None else ready
            deadline = max(ready, self._due_s(k)) + self.preset.deadline_ms / 1000
            if self.now() > deadline:
                late += 1
                self.chain.record(True)
                continue
            if not self.config.idle_frames and np.all(np.abs(row) < CLOSED_MOUTH_EPS):
                silent += 1
                continue
            start, end = self.clock.frame_span(k)
            events.append(self._encode(k, k + self._idle_total, row, start, end - start, False, ready, deadline))
            events += self._changes()
        self.arrivals.forget_before(self.driver.needed_sample(first + len(rows)))
        events += [Dropped(n, reason) for n, reason in ((late, "late"), (silent, "silent")) if n]
        return events

    def _idle_frame(self, due_s: float) -> FrameOut:
        k = self.driver.next_frame
        frame = self._encode(k, k + self._idle_total, np.zeros(4, np.float32), self.driver.received, 0, True,
                             due_s, due_s + self.preset.deadline_ms / 1000)
        self._idle_total += 1
        return frame

    def _encode(self, k: int, motion_index: int, row: np.ndarray, pts: int, span: int, idle: bool,
                ready: float, deadline: float) -> FrameOut:
        image = fit(self.chain.render(motion_index, row), self.size)
        data, key = self.encoder.encode(image, pts)
        return FrameOut(k, pts, span, data, key, idle, ready, deadline, self.chain.name, row)

    def _due_s(self, k: int) -> float:
        """When frame k is due to play if the turn's audio plays in real time from its arrival."""
        arrived, first = self._turn_anchor
        return arrived + (self.clock.frame_start(k + 1) - first + self.driver.lookahead) / SAMPLE_RATE

    def _changes(self) -> list[Event]:
        new = self.chain.changes[self._changes_seen :]
        self._changes_seen = len(self.chain.changes)
        return [Status("fallback", asdict(c)) for c in new]

    @staticmethod
    def _ms(samples: int) -> float:
        return samples * 1000 / SAMPLE_RATE


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
