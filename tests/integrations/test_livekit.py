"""The LiveKit Agents plugin against LiveKit's real AvatarRunner, QueueAudioOutput and
AVSynchronizer (native AudioSource / VideoSource), in a duck-typed room: no server needed.

What a viewer would get is reassembled from when the runner's sources send each video frame and
play each piece of audio, and measured with lipstream eval."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest
from recording import TTS_RATE_HZ, chunks, tts_speech, write_timed_mp4

pytest.importorskip("livekit.agents", reason="the LiveKit plugin needs: pip install 'lipstream[livekit]'")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AvatarRunner, QueueAudioOutput  # noqa: E402

from lipstream.evaluate import evaluate_video_sync  # noqa: E402
from lipstream.integrations.livekit import AvatarSession, LipstreamVideoGenerator  # noqa: E402

SYNC_MS = 40.0


class Publication:
    def __init__(self, track):
        self.track = track

    async def wait_for_subscription(self) -> None:
        return None


class Participant:
    identity = "agent-1"

    def __init__(self):
        self.published = []

    async def publish_track(self, track, options=None) -> Publication:
        self.published.append(track)
        return Publication(track)


class Room(rtc.EventEmitter):
    """What AvatarRunner and AvatarSession use of an `rtc.Room`."""

    name = "test-room"

    def __init__(self):
        super().__init__()
        self.local_participant = Participant()
        self.remote_participants = {}

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


async def _run_reply(avatar, seconds: float, clear_at_s: float | None = None):
    generator = CountingGenerator(avatar, sample_rate=TTS_RATE_HZ)
    audio_out = QueueAudioOutput(sample_rate=TTS_RATE_HZ, wait_playback_start=True)
    runner = AvatarRunner(Room(), audio_recv=audio_out, video_gen=generator, options=generator.avatar_options())
    await runner.start()
    played = Played(runner)
    audio_out.on("playback_finished", played.on_finished)
    await asyncio.sleep(1.0)
    idle_fps = len(played.video) / 1.0 if played.video else 0.0
    idle_frames = generator.video
    start = time.perf_counter()
    speech = tts_speech(seconds)
    for chunk in chunks(speech):  # as the agent's TTS pipeline does: 20 ms frames, faster than real time
        await audio_out.capture_frame(rtc.AudioFrame(chunk.tobytes(), TTS_RATE_HZ, 1, len(chunk)))
    audio_out.flush()
    if clear_at_s is not None:
        await asyncio.sleep(clear_at_s - (time.perf_counter() - start))
        audio_out.clear_buffer()
    deadline = start + seconds + 5.0
    while not played.finished and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    after = len(played.video)
    await asyncio.sleep(0.5)
    idle_after_fps = (len(played.video) - after) / 0.5
    await runner.aclose()
    generator.close()
    return dict(generator=generator, played=played, start=start, speech=speech, idle_fps=idle_fps,
                idle_after_fps=idle_after_fps, idle_frames=idle_frames)


def test_a_reply_plays_whole_in_sync_between_idle_frames(small_avatar, tmp_path):
    run = asyncio.run(_run_reply(small_avatar, 3.0))
    played, generator = run["played"], run["generator"]
    assert 72 <= generator.reply_video <= 78  # 75 +- 3
    assert len(played.finished) == 1
    when, position, interrupted = played.finished[0]
    assert abs(position - 3.0) <= 0.1 and not interrupted
    assert np.array_equal(np.concatenate([a for _, a in played.audio]), run["speech"])  # at 24 kHz, unchanged
    assert run["idle_fps"] >= 20 and run["idle_after_fps"] >= 20
    video = write_timed_mp4(tmp_path / "livekit.mp4", played.video, played.audio, TTS_RATE_HZ, 25)
    offset = evaluate_video_sync(video).offset_ms
    assert abs(offset) <= SYNC_MS, f"A/V offset {offset:.0f} ms"


def test_clear_buffer_reports_the_position_it_was_interrupted_at(small_avatar):
    run = asyncio.run(_run_reply(small_avatar, 3.0, clear_at_s=0.8))
    played = run["played"]
    assert len(played.finished) == 1
    when, position, interrupted = played.finished[0]
    assert interrupted and abs(position - 0.8) <= 0.2
    assert sum(len(a) for _, a in played.audio) / TTS_RATE_HZ <= 1.0  # the rest of the reply never played
    assert run["idle_after_fps"] >= 20  # idle again at once


class AgentSessionStandIn(rtc.EventEmitter):
    """What AvatarSession uses of an `AgentSession`: its TTS's rate and its output chain."""

    def __init__(self, tts_rate: int):
        from livekit.agents.voice.io import AgentOutput

        super().__init__()
        self.tts = type("TTS", (), {"sample_rate": tts_rate})()
        self.output = AgentOutput(self._audio_changed, self._audio_changed, self._audio_changed)

    def _audio_changed(self) -> None:
        pass


def test_avatar_session_becomes_the_agents_audio_output_at_its_tts_rate(small_avatar):
    async def run():
        agent = AgentSessionStandIn(tts_rate=22050)
        avatar = AvatarSession(small_avatar)
        room = Room()
        await avatar.start(agent, room)
        output = agent.output.audio
        finished = []
        output.on("playback_finished", lambda ev: finished.append(ev))
        speech = tts_speech(0.6, rate=22050)
        for chunk in chunks(speech, rate=22050):
            await output.capture_frame(rtc.AudioFrame(chunk.tobytes(), 22050, 1, len(chunk)))
        output.flush()
        for _ in range(100):
            if finished:
                break
            await asyncio.sleep(0.05)
        options = avatar.video_generator.avatar_options()
        await avatar.aclose()
        return avatar, room, output, finished, options

    avatar, room, output, finished, options = asyncio.run(run())
    assert isinstance(output, QueueAudioOutput) and output.sample_rate == 22050
    assert options.audio_sample_rate == 22050 and (options.video_width, options.video_height) == (256, 256)
    assert avatar.avatar_identity == room.local_participant.identity  # the agent publishes the avatar itself
    assert len(room.local_participant.published) == 2  # its audio and video tracks
    assert len(finished) == 1 and abs(finished[0].playback_position - 0.6) <= 0.05
    assert avatar.runner is None


def test_without_livekit_the_import_says_what_to_install():
    code = ("import sys; sys.modules['livekit'] = None\n"
            "try:\n    import lipstream.integrations.livekit\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "NotSupportedError" in out and "pip install 'lipstream[livekit]'" in out
