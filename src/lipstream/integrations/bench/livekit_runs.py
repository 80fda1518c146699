"""The LiveKit plugin against LiveKit's real AvatarRunner, QueueAudioOutput and AVSynchronizer
(native AudioSource / VideoSource) in a duck-typed room: no server needed. What a viewer would
get is recorded from when the runner's sources send each video frame and play each piece of audio."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AvatarRunner, QueueAudioOutput

from lipstream.integrations.bench import TTS_RATE_HZ, chunks, tts_speech
from lipstream.integrations.livekit import LipstreamVideoGenerator


class Publication:
    def __init__(self, track):
        self.track = track

    async def wait_for_subscription(self) -> None:
        return None


class Participant:
    identity = "agent-1"

    def __init__(self):
        self.published: list = []

    async def publish_track(self, track, options=None) -> Publication:
        self.published.append(track)
        return Publication(track)


class Room(rtc.EventEmitter):
    """What AvatarRunner and AvatarSession use of an `rtc.Room`."""

    name = "bench-room"

    def __init__(self):
        super().__init__()
        self.local_participant = Participant()
        self.remote_participants: dict = {}

    def isconnected(self) -> bool:
        return True


class Played:
    """When the runner's sources send each video frame and play each piece of audio (perf_counter s)."""

    def __init__(self, runner: AvatarRunner):
        self.video: list[tuple[float, np.ndarray]] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self.finished: list[tuple[float, float, bool]] = []  # (when, position s, interrupted)
        video_source, audio_source = runner.av_sync._video_source, runner.av_sync._audio_source
        send, play = video_source.capture_frame, audio_source.capture_frame

        def sent(frame, **kwargs):
            image = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3).copy()
            self.video.append((time.perf_counter(), image))
            return send(frame, **kwargs)

        async def played(frame):
            starts = time.perf_counter() + audio_source.queued_duration  # after what is queued before it
            self.audio.append((starts, np.frombuffer(frame.data, np.int16).copy()))
            return await play(frame)

        video_source.capture_frame, audio_source.capture_frame = sent, played

    def on_finished(self, event) -> None:
        self.finished.append((time.perf_counter(), event.playback_position, event.interrupted))


class CountingGenerator(LipstreamVideoGenerator):
    """Counts the reply's video frames: those handed out after its first audio, up to its end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reply_video = self.video = 0
        self._in_reply = False

    def __aiter__(self):
        return self._counted()

    async def _counted(self):
        async for item in super().__aiter__():
            if isinstance(item, rtc.AudioFrame):
                self._in_reply = True
            elif isinstance(item, rtc.VideoFrame):
                self.video += 1
                self.reply_video += self._in_reply
            else:
                self._in_reply = False
            yield item


@dataclass
class ReplyRun:
    """One reply through the runner: what was sent, played and reported."""

    speech: np.ndarray
    reply_video_frames: int
    played: Played
    idle_fps_before: float
    idle_fps_after: float
    renderers: list[str] = field(default_factory=list)  # in use at the start, then after each fallback

    @property
    def finished(self) -> tuple[float, float, bool]:
        """(when, position s, interrupted) of the one playback_finished."""
        return self.played.finished[0]


async def run_reply(avatar, seconds: float = 3.0, clear_at_s: float | None = None, **options) -> ReplyRun:
    """`seconds` of speech at 24 kHz in 20 ms frames through QueueAudioOutput -> AvatarRunner with a
    LipstreamVideoGenerator (after 1 s idle), optionally cleared `clear_at_s` after it starts."""
    generator = CountingGenerator(avatar, sample_rate=TTS_RATE_HZ, **options)
    audio_out = QueueAudioOutput(sample_rate=TTS_RATE_HZ, wait_playback_start=True)
    runner = AvatarRunner(Room(), audio_recv=audio_out, video_gen=generator, options=generator.avatar_options())
    await runner.start()
    played = Played(runner)
    audio_out.on("playback_finished", played.on_finished)
    await asyncio.sleep(1.0)
    idle_before = len(played.video) / 1.0
    start = time.perf_counter()
    speech = tts_speech(seconds)
    for chunk in chunks(speech):  # as the agent's TTS pipeline does: 20 ms frames, faster than real time
        await audio_out.capture_frame(rtc.AudioFrame(chunk.tobytes(), TTS_RATE_HZ, 1, len(chunk)))
    audio_out.flush()
    if clear_at_s is not None:
        await asyncio.sleep(max(0.0, clear_at_s - (time.perf_counter() - start)))
        audio_out.clear_buffer()
    deadline = start + seconds + 5.0
    while not played.finished and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    after = len(played.video)
    await asyncio.sleep(0.5)
    idle_after = (len(played.video) - after) / 0.5
    await runner.aclose()
    generator.close()
    chain = generator.stream.session.chain
    renderers = [c.from_renderer for c in chain.changes[:1]] + [c.to_renderer for c in chain.changes] or [chain.name]
    return ReplyRun(speech, generator.reply_video, played, idle_before, idle_after, renderers)
