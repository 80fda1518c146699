"""lipstream as a LiveKit Agents avatar, rendered in the agent's own process (no API key, no network).

    from lipstream.integrations.livekit import AvatarSession

    avatar = AvatarSession("default")                  # or a photo, a video, a prepared package
    await avatar.start(session, room=ctx.room)         # before session.start(...)

`AvatarSession` makes a `QueueAudioOutput` the agent's audio output and runs LiveKit's
`AvatarRunner` with a `LipstreamVideoGenerator` on it, as livekit-plugins-bithuman's local mode
does; the avatar publishes as the agent's own participant. The generator alone can be given to
your own `AvatarRunner` (with `avatar_options()`).

Each video frame is followed by exactly the audio it shows (1/fps of it, the last of a reply may
be shorter), at the rate the audio came in (the TTS's, no 16 kHz round trip); between replies
idle frames come at the frame rate. LiveKit's runner paces both and reports playback: a finished
reply at its full length, `clear_buffer` (an interruption) at the audio handed out so far.
Needs `pip install 'lipstream[livekit]'` (livekit-agents 1.8).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque

from lipstream.api import Avatar
from lipstream.audio.pcm import to_pcm16
from lipstream.errors import NotSupportedError
from lipstream.integrations.replies import ReplyEnd, ReplyStats, ReplyStream
from lipstream.session import Clock, Frame, Preset

try:
    from livekit import rtc
    from livekit.agents.voice import avatar as lk_avatar
except ImportError as exc:
    raise NotSupportedError(
        "lipstream.integrations.livekit needs LiveKit Agents: pip install 'lipstream[livekit]'"
    ) from exc

__all__ = ["DEFAULT_SAMPLE_RATE", "AvatarSession", "LipstreamVideoGenerator"]

log = logging.getLogger(__name__)

# How long before its audio starts playing (in frames) a video frame is handed to AvatarRunner:
# its AVSynchronizer sends it at its next tick, up to a frame later, so it goes out within half a
# frame of its audio's start, early or late.
VIDEO_LEAD_FRAMES = 0.5
# The audio AvatarRunner's AudioSource queues (s, its default): audio is handed out when it fits.
RUNNER_AUDIO_QUEUE_S = 0.1
# The longest `clear_buffer` waits for the runner to take the frame it is pushing (it waits for
# room in the AudioSource's 100 ms queue).
CLEAR_WAIT_S = 0.2
# The audio rate used when neither the caller nor the agent's TTS names one (most TTSs use it).
DEFAULT_SAMPLE_RATE = 24000


class LipstreamVideoGenerator(lk_avatar.VideoGenerator):
    """A LiveKit `VideoGenerator` backed by a lipstream session.

    avatar: "default", a photo or video of one face (prepared on first use), a package made by
    `lipstream prepare`, or an opened `lipstream.Avatar`; loaded at construction. driver /
    renderer / fps / size (width, height) / preset: as `lipstream.Session` takes them (None: the
    defaults: the avatar's fps and size, preset "low"). sample_rate: the audio rate given to
    `AvatarRunner` in `avatar_options()` (pushed audio should come at it). clock: tests.

    `AvatarRunner` pushes what this yields into an `AVSynchronizer`, which sends a video frame at
    its next tick but queues audio in the `AudioSource` (up to 100 ms) before it plays: video and
    audio are not timestamp-locked there. So each frame's audio is yielded once it fits in the
    AudioSource's queue, and its video frame is held back until that audio starts to play (by the
    AudioSource's own queue model: audio plays in real time from when it is pushed, after what is
    queued before it), less half a frame for the synchronizer's tick; without that a viewer sees
    the mouth about 100 ms ahead of the voice. The runner then never waits on the queue, so the
    video goes out when it is due rather than when the runner next asks for something.
    """

    def __init__(self, avatar: str | os.PathLike | Avatar = "default", *, driver: str | None = None,
                 renderer: str | None = None, fps: float | None = None,
                 size: tuple[int | None, int | None] | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 preset: str | Preset | None = None, clock: Clock | None = None):
        self.stream = ReplyStream(avatar, driver=driver, renderer=renderer, fps=fps, size=size, preset=preset,
                                  clock=clock)
        self.sample_rate = sample_rate
        self._taken = asyncio.Event()  # set while nothing handed out is still being pushed
        self._taken.set()

    def avatar_options(self) -> lk_avatar.AvatarOptions:
        """Size, frame rate and audio format to give `AvatarRunner`."""
        width, height = self.stream.size
        return lk_avatar.AvatarOptions(video_width=width, video_height=height, video_fps=self.stream.fps,
                                       audio_sample_rate=self.sample_rate, audio_channels=1)

    async def push_audio(self, frame: rtc.AudioFrame | lk_avatar.AudioSegmentEnd) -> None:
        """A chunk of the reply's audio, or the end of the reply."""
        if isinstance(frame, lk_avatar.AudioSegmentEnd):
            self.stream.end_reply()
        else:
            self.stream.push(frame.data, frame.sample_rate, frame.num_channels)

    async def clear_buffer(self) -> None:
        """Interruption: drop the rest of the reply and go idle at once. Returns once the runner
        has taken the frame it was pushing, so that it counts that frame's audio before it
        reports the position (and does not report the reply as started again)."""
        for reply in self.stream.interrupt():
            _log_reply(reply)
        try:
            await asyncio.wait_for(self._taken.wait(), CLEAR_WAIT_S)
        except TimeoutError:
            pass

    def __aiter__(self):
        return self._handed_out()

    async def _handed_out(self):
        async for out in self._frames():
            self._taken.clear()
            yield out
            self._taken.set()

    async def _frames(self):
        """Each frame's audio once the AudioSource's queue has room for it (so the runner never
        waits there and takes each item when it is handed out); its video frame at the time that
        audio starts to play, less VIDEO_LEAD_FRAMES of a frame; idle frames and the end of a
        reply after the held video (see the class docstring)."""
        audio, held = _AudioQueue(), _HeldVideo()
        generation = self.stream.generation
        now = self.stream.clock.now
        lead_s = VIDEO_LEAD_FRAMES / self.stream.fps
        items = aiter(self.stream)

        async def fetch():
            item = await anext(items)
            return item, self.stream.generation  # made after the last interruption before it

        fetching: asyncio.Future | None = None
        item, item_generation = None, generation
        try:
            while True:
                if generation != self.stream.generation:  # interrupted: the held video is stale
                    held.clear()
                    generation = self.stream.generation
                if item is not None and item_generation != generation:
                    item = None
                due = held.take_due(now())
                if due is not None:
                    yield due
                    continue
                if item is None:
                    fetching = fetching or asyncio.ensure_future(fetch())
                    done, _ = await asyncio.wait({fetching}, timeout=held.wait_s(now()))
                    if done:
                        fetching, got = None, fetching
                        try:
                            item, item_generation = got.result()
                        except StopAsyncIteration:
                            return
                    continue
                if isinstance(item, ReplyEnd) or item.idle:  # the reply's last video frames first
                    if held:
                        await asyncio.sleep(held.wait_s(now()))
                        continue
                    out, item = item, None
                    if isinstance(out, ReplyEnd):
                        out.stats.dropped += held.take_skipped()
                        _log_reply(out.stats)
                        yield lk_avatar.AudioSegmentEnd()
                    else:
                        yield self._video(out)
                    continue
                seconds = len(item.audio) / item.sample_rate
                wait_s = min(audio.room_at(seconds) - now(), held.wait_s(now(), default=float("inf")))
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                    continue
                out, item = item, None
                held.hold(audio.play(now(), seconds) - lead_s, self._video(out))
                if seconds:
                    yield _audio_frame(out)
        finally:
            if fetching is not None:
                fetching.cancel()

    def _video(self, frame: Frame) -> rtc.VideoFrame:
        return rtc.VideoFrame(*self.stream.size, rtc.VideoBufferType.RGB24, frame.image.tobytes())

    def close(self) -> None:
        """Stop rendering; the iterator ends."""
        self.stream.close()


class _AudioQueue:
    """A model of AvatarRunner's AudioSource: audio plays in real time from when it is pushed,
    after what is queued before it, and the queue holds RUNNER_AUDIO_QUEUE_S."""

    def __init__(self):
        self.end_s = 0.0  # when the audio pushed so far will have played (clock s)

    def room_at(self, seconds: float) -> float:
        """When (clock s) the queue has room for `seconds` more audio."""
        return self.end_s - (RUNNER_AUDIO_QUEUE_S - seconds)

    def play(self, now_s: float, seconds: float) -> float:
        """Push `seconds` of audio at `now_s`; returns when (clock s) it starts to play."""
        starts_s = max(now_s, self.end_s)
        if seconds:
            self.end_s = starts_s + seconds
        return starts_s


class _HeldVideo:
    """Video frames held until they are due. When several are due at once (the event loop
    stalled), only the latest goes out and the others count as skipped: a burst would sit in
    the synchronizer's queue and delay all later video."""

    def __init__(self):
        self._frames: deque[tuple[float, rtc.VideoFrame]] = deque()  # (when due, clock s; video)
        self._skipped = 0

    def __bool__(self) -> bool:
        return bool(self._frames)

    def hold(self, due_s: float, frame: rtc.VideoFrame) -> None:
        self._frames.append((due_s, frame))

    def clear(self) -> None:
        self._frames.clear()

    def wait_s(self, now_s: float, default: float | None = None) -> float | None:
        """Seconds until the next frame is due (0 if it is; `default` if none is held)."""
        return max(0.0, self._frames[0][0] - now_s) if self._frames else default

    def take_due(self, now_s: float) -> rtc.VideoFrame | None:
        """The latest frame due at `now_s` (earlier due ones are skipped), or None."""
        if not self._frames or self._frames[0][0] > now_s:
            return None
        while len(self._frames) > 1 and self._frames[1][0] <= now_s:
            self._frames.popleft()
            self._skipped += 1
        return self._frames.popleft()[1]

    def take_skipped(self) -> int:
        """Frames skipped since the last call."""
        skipped, self._skipped = self._skipped, 0
        return skipped


class AvatarSession(lk_avatar.AvatarSession):
    """A lipstream avatar for an `AgentSession`, rendered in-process (see the module docstring).

    Options as `LipstreamVideoGenerator`'s; the avatar is loaded here, at construction.
    sample_rate None: the agent's TTS rate (else DEFAULT_SAMPLE_RATE).
    """

    def __init__(self, avatar: str | os.PathLike | Avatar = "default", *, driver: str | None = None,
                 renderer: str | None = None, fps: float | None = None,
                 size: tuple[int | None, int | None] | None = None, sample_rate: int | None = None,
                 preset: str | Preset | None = None):
        super().__init__()
        self._sample_rate = sample_rate
        self.video_generator = LipstreamVideoGenerator(avatar, driver=driver, renderer=renderer, fps=fps, size=size,
                                                       sample_rate=sample_rate or DEFAULT_SAMPLE_RATE, preset=preset)
        self.runner: lk_avatar.AvatarRunner | None = None
        self._identity = ""

    @property
    def avatar_identity(self) -> str:
        """The agent's own participant: the avatar publishes as the agent."""
        return self._identity

    @property
    def provider(self) -> str:
        return "lipstream"

    async def start(self, agent_session, room: rtc.Room) -> None:
        """Publish the avatar's video and audio in `room` and make it `agent_session`'s audio output."""
        self._identity = room.local_participant.identity
        rate = self._sample_rate or getattr(agent_session.tts, "sample_rate", None) or DEFAULT_SAMPLE_RATE
        self.video_generator.sample_rate = rate
        audio = lk_avatar.QueueAudioOutput(sample_rate=rate, wait_playback_start=True)
        self.runner = lk_avatar.AvatarRunner(room, audio_recv=audio, video_gen=self.video_generator,
                                             options=self.video_generator.avatar_options())
        await self.runner.start()
        agent_session.output.replace_audio_tail(audio)
        await super().start(agent_session, room)

    async def aclose(self) -> None:
        """Stop the avatar. Unlike the base class, remove no participant: the avatar is the agent."""
        room, self._room = self._room, None
        if room is not None:
            room.off("connection_state_changed", self._on_connection_state_changed)
        await super().aclose()
        if self.runner is not None:
            await self.runner.aclose()
            self.runner = None
        self.video_generator.close()


def _audio_frame(frame: Frame) -> rtc.AudioFrame:
    return rtc.AudioFrame(to_pcm16(frame.audio), frame.sample_rate, frame.channels, len(frame.audio))


def _log_reply(reply: ReplyStats) -> None:
    ttff = reply.time_to_first_frame_s
    log.info("lipstream reply %d%s: %.2f s of audio in %d frames, first frame %s after its first audio, "
             "%d frames dropped", reply.number, " (interrupted)" if reply.interrupted else "", reply.seconds_out,
             reply.frames, "-" if ttff is None else f"{ttff * 1000:.0f} ms", reply.dropped)
