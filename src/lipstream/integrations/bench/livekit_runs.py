"""The LiveKit plugin against LiveKit's real AvatarRunner, QueueAudioOutput and AVSynchronizer
(native AudioSource / VideoSource) in a duck-typed room: no server needed. What a viewer would
get is recorded where the runner publishes it: each video frame when the VideoSource sends it
(its capture time, which LiveKit stamps it with), and the audio as the published audio track
delivers it (an AudioStream on the local track: the AudioSource's own playout, after its queue)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AvatarRunner, QueueAudioOutput

from lipstream.integrations.bench import TTS_RATE_HZ, chunks, tts_speech
from lipstream.integrations.livekit import LipstreamVideoGenerator

KEY_SAMPLES = 16  # samples that look a piece of the published audio up in the reply


class Publication:
    def __init__(self, track):
        self.track = track

    async def wait_for_subscription(self) -> None:
        return None


class Participant:
    """The agent's participant: records the audio of the audio track it publishes (see `Heard`)."""

    identity = "agent-1"

    def __init__(self, audio_rate: int = TTS_RATE_HZ):
        self.published: list = []
        self.heard = Heard(audio_rate)

    async def publish_track(self, track, options=None) -> Publication:
        self.published.append(track)
        if isinstance(track, rtc.LocalAudioTrack):
            self.heard.listen(track)
        return Publication(track)


class Heard:
    """The audio a published track carries, as (time s, int16 mono samples at `rate`) pieces: the
    AudioSource plays its queue out in real time, 10 ms at a time, silence when it is empty; a
    piece is timed when it reaches this process, or earlier when the next one came less than a
    piece's length after it (the event loop was busy: it was sent in order, in real time)."""

    def __init__(self, rate: int):
        self.rate = rate
        self.pieces: list[tuple[float, np.ndarray]] = []  # (arrival s, samples)
        self._stream: rtc.AudioStream | None = None
        self._task: asyncio.Task | None = None

    def listen(self, track: rtc.LocalAudioTrack) -> None:
        self._stream = stream = rtc.AudioStream.from_track(track=track, sample_rate=self.rate, num_channels=1)

        async def record():
            async for event in stream:
                self.pieces.append((time.perf_counter(), np.frombuffer(event.frame.data, np.int16).copy()))

        self._task = asyncio.create_task(record())

    async def stop(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            await asyncio.gather(self._task, return_exceptions=True)
            self._stream = self._task = None

    def timed(self) -> list[tuple[float, np.ndarray]]:
        """The pieces with the times they were sent (see the class docstring)."""
        out: list[tuple[float, np.ndarray]] = []
        sent_next = None
        for arrived, samples in reversed(self.pieces):
            sent = arrived if sent_next is None else min(arrived, sent_next - len(samples) / self.rate)
            out.append((sent, samples))
            sent_next = sent
        return out[::-1]


class Room(rtc.EventEmitter):
    """What AvatarRunner and AvatarSession use of an `rtc.Room`."""

    name = "bench-room"

    def __init__(self, audio_rate: int = TTS_RATE_HZ):
        super().__init__()
        self.local_participant = Participant(audio_rate)
        self.remote_participants: dict = {}

    def isconnected(self) -> bool:
        return True


class Played:
    """What the runner publishes (perf_counter s): `video`, each frame when the VideoSource sends it;
    `audio`, the published track's audio (`Heard.timed`); `sent_audio`, the audio frames given to
    the AudioSource, as they were given (bit for bit, untimed)."""

    def __init__(self, runner: AvatarRunner, room: Room):
        self.video: list[tuple[float, np.ndarray]] = []
        self.sent_audio: list[np.ndarray] = []
        self.finished: list[tuple[float, float, bool]] = []  # (when, position s, interrupted)
        self.heard = room.local_participant.heard
        video_source, audio_source = runner.av_sync._video_source, runner.av_sync._audio_source
        send, play = video_source.capture_frame, audio_source.capture_frame

        def sent(frame, **kwargs):
            image = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3).copy()
            self.video.append((time.perf_counter(), image))
            return send(frame, **kwargs)

        async def played(frame):
            self.sent_audio.append(np.frombuffer(frame.data, np.int16).copy())
            return await play(frame)

        video_source.capture_frame, audio_source.capture_frame = sent, played

    @property
    def audio(self) -> list[tuple[float, np.ndarray]]:
        return self.heard.timed()

    def on_finished(self, event) -> None:
        self.finished.append((time.perf_counter(), event.playback_position, event.interrupted))


class CountingGenerator(LipstreamVideoGenerator):
    """Counts the reply's video frames: those handed out after its first audio, up to its end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reply_video = self.video = 0
        self.reply_images: list[str] = []  # digests of the reply's video frames, in order
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
                if self._in_reply:
                    self.reply_images.append(_digest(item.data))
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

    reply_images: list[str] = field(default_factory=list)  # digests of the reply's video frames, in order
    fps: float = 25.0

    @property
    def finished(self) -> tuple[float, float, bool]:
        """(when, position s, interrupted) of the one playback_finished."""
        return self.played.finished[0]

    def frame_offsets_ms(self) -> np.ndarray:
        """For each of the reply's video frames as published: when it was sent minus when the audio
        of its span (frame n shows the reply's audio from n/fps) started on the published audio
        track (ms; + = the video is late). Each loud piece of the track is found in the reply by
        its samples (they go through bit for bit), so a piece the recording lost moves nothing;
        a frame's audio is timed from the last piece found at or before its start."""
        rate = self.played.heard.rate
        speech = self.speech
        at_key: dict[bytes, list[int]] = {}
        for p in range(len(speech) - KEY_SAMPLES):
            at_key.setdefault(speech[p : p + KEY_SAMPLES].tobytes(), []).append(p)
        found: list[tuple[int, float]] = []  # (reply sample, when it played)
        for sent_s, samples in self.played.audio:
            if len(samples) < KEY_SAMPLES or np.abs(samples.astype(np.int32)).max() < 1000:
                continue
            places = [p for p in at_key.get(samples[:KEY_SAMPLES].tobytes(), [])
                      if np.array_equal(speech[p : p + len(samples)], samples)]
            if len(places) == 1:
                found.append((places[0], sent_s))
        if not found:
            return np.zeros(0)
        starts = np.array([p for p, _ in found])
        offsets, n = [], 0
        for sent_s, image in self.played.video:
            if n < len(self.reply_images) and _digest(image) == self.reply_images[n]:
                sample = round(n * rate / self.fps)
                j = max(0, int(np.searchsorted(starts, sample, side="right")) - 1)
                offsets.append(sent_s - (found[j][1] + (sample - found[j][0]) / rate))
                n += 1
        return np.array(offsets) * 1000


async def run_reply(avatar, seconds: float = 3.0, clear_at_s: float | None = None, **options) -> ReplyRun:
    """`seconds` of speech at 24 kHz in 20 ms frames through QueueAudioOutput -> AvatarRunner with a
    LipstreamVideoGenerator (after 1 s idle), optionally cleared `clear_at_s` after it starts."""
    generator = CountingGenerator(avatar, sample_rate=TTS_RATE_HZ, **options)
    audio_out = QueueAudioOutput(sample_rate=TTS_RATE_HZ, wait_playback_start=True)
    room = Room(TTS_RATE_HZ)
    runner = AvatarRunner(room, audio_recv=audio_out, video_gen=generator, options=generator.avatar_options())
    await runner.start()
    played = Played(runner, room)
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
    await played.heard.stop()
    generator.close()
    chain = generator.stream.session.chain
    renderers = [c.from_renderer for c in chain.changes[:1]] + [c.to_renderer for c in chain.changes] or [chain.name]
    return ReplyRun(speech, generator.reply_video, played, idle_before, idle_after, renderers,
                    generator.reply_images, generator.stream.fps)


def _digest(image) -> str:
    return hashlib.blake2b(memoryview(image).cast("B"), digest_size=16).hexdigest()
