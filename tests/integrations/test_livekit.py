"""The LiveKit Agents plugin against LiveKit's real AvatarRunner, QueueAudioOutput and
AVSynchronizer (native AudioSource / VideoSource), in a duck-typed room: no server needed.

What a viewer would get is reassembled from when the runner's VideoSource sends each video frame
and from the audio its published track carries, and measured with lipstream eval."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lipstream.integrations.bench import TTS_RATE_HZ, chunks, sync_offset_ms, tts_speech

pytest.importorskip("livekit.agents", reason="the LiveKit plugin needs: pip install 'lipstream[livekit]'")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import QueueAudioOutput  # noqa: E402

from lipstream.integrations.bench.livekit_runs import Room, run_reply  # noqa: E402
from lipstream.integrations.livekit import RUNNER_AUDIO_QUEUE_S, AvatarSession, _AudioQueue, _HeldVideo  # noqa: E402

# The bar is 40 ms, measured by `python -m lipstream.integrations.bench` (docs/integrations.md); this
# real-time run shares 2 cores with the rest of the suite, whose load delays frames by tens of ms,
# so it asserts two frames: enough to catch a systematic error such as AVSynchronizer's ~100 ms.
SYNC_MS = 80.0


def test_a_reply_plays_whole_in_sync_between_idle_frames(small_avatar, tmp_path):
    run = asyncio.run(run_reply(small_avatar, 3.0))
    played = run.played
    assert 72 <= run.reply_video_frames <= 78  # 75 +- 3
    assert len(played.finished) == 1
    _, position, interrupted = run.finished
    assert abs(position - 3.0) <= 0.1 and not interrupted
    assert np.array_equal(np.concatenate(played.sent_audio), run.speech)  # at 24 kHz, unchanged
    assert run.idle_fps_before >= 20 and run.idle_fps_after >= 20
    offset = sync_offset_ms(tmp_path / "livekit.mp4", played.video, played.audio, TTS_RATE_HZ, 25)
    assert abs(offset) <= SYNC_MS, f"A/V offset {offset:.0f} ms"


def test_clear_buffer_reports_the_position_it_was_interrupted_at(small_avatar):
    run = asyncio.run(run_reply(small_avatar, 3.0, clear_at_s=0.8))
    assert len(run.played.finished) == 1
    _, position, interrupted = run.finished
    played_s = sum(map(len, run.played.sent_audio)) / TTS_RATE_HZ
    # the position reported is what played, and playing stopped at the clear: at most the 0.8 s
    # elapsed plus the runner's 100 ms queue (a busy machine plays less by then, never more; the
    # 0.8 +- 0.2 s bar itself is measured by `python -m lipstream.integrations.bench`)
    assert interrupted and 0 < position <= 1.0 and abs(position - played_s) <= 0.04
    assert run.idle_fps_after >= 20  # idle again at once


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


def test_audio_queue_model_plays_pushes_back_to_back_and_has_room_when_they_fit():
    queue = _AudioQueue()
    assert queue.play(10.0, 0.04) == 10.0  # empty: plays at once
    assert queue.play(10.01, 0.04) == pytest.approx(10.04)  # after what is queued
    assert queue.room_at(0.04) == pytest.approx(10.08 - (RUNNER_AUDIO_QUEUE_S - 0.04))
    assert queue.play(11.0, 0.0) == 11.0 and queue.end_s == pytest.approx(10.08)  # no audio: nothing queued


def test_held_video_after_a_stall_sends_only_the_latest_due_frame_and_counts_the_rest():
    held = _HeldVideo()
    for k in range(4):
        held.hold(1.0 + 0.04 * k, f"frame {k}")
    assert held.take_due(0.99) is None and held.wait_s(0.99) == pytest.approx(0.01)
    assert held.take_due(1.09) == "frame 2"  # 0 and 1 were due as well: skipped
    assert held.take_skipped() == 2 and held.take_skipped() == 0
    assert held.take_due(1.2) == "frame 3" and not held and held.wait_s(1.2) is None
