"""ReplyStream: a live session driven reply by reply from asyncio (on a manual clock: no idle
frames, no deadlines, no quiet-turn ends; frames come from the audio alone)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from lipstream.integrations.bench import TTS_RATE_HZ, chunks, tts_speech

from lipstream.integrations.replies import ReplyEnd, ReplyStream
from lipstream.session import Frame, ManualClock

FRAME_SAMPLES = TTS_RATE_HZ // 25


async def _collect(stream: ReplyStream, until_ends: int) -> list:
    """Items handed out until `until_ends` ReplyEnds have come."""
    out = []
    async for item in stream:
        out.append(item)
        if sum(isinstance(i, ReplyEnd) for i in out) == until_ends:
            return out
    return out


def test_a_reply_comes_out_as_its_frames_with_the_exact_audio_then_its_end(small_avatar):
    stream = ReplyStream(small_avatar, clock=ManualClock())
    speech = tts_speech(2.0)

    async def run():
        stream.mark("started")
        for chunk in chunks(speech):
            stream.push(chunk.tobytes(), TTS_RATE_HZ)
        stream.end_reply("stopped")
        return await asyncio.wait_for(_collect(stream, 1), 60)

    out = asyncio.run(run())
    stream.close()
    frames = [i for i in out if isinstance(i, Frame)]
    assert out[0] == "started" and isinstance(out[-1], ReplyEnd) and out[-1].marker == "stopped"
    assert len(frames) == 50 and not any(f.idle for f in frames)
    assert all(len(f.audio) == FRAME_SAMPLES and f.sample_rate == TTS_RATE_HZ for f in frames)
    assert np.array_equal(np.concatenate([f.audio[:, 0] for f in frames]), speech)  # bit-exact, at 24 kHz
    stats = out[-1].stats
    assert (stats.frames, stats.samples_in, stats.samples_out, stats.interrupted) == (50, 48000, 48000, False)
    assert stats.time_to_first_frame_s == 0.0  # the manual clock never moved


def test_replies_and_marks_keep_their_order(small_avatar):
    stream = ReplyStream(small_avatar, clock=ManualClock())

    async def run():
        for n in (1, 2):
            stream.mark(f"start {n}")
            stream.push(tts_speech(0.5 * n), TTS_RATE_HZ)
            stream.end_reply(f"stop {n}")
        return await asyncio.wait_for(_collect(stream, 2), 60)

    out = asyncio.run(run())
    stream.close()
    marks = [(i, x if isinstance(x, str) else x.marker) for i, x in enumerate(out) if not isinstance(x, Frame)]
    assert [m for _, m in marks] == ["start 1", "stop 1", "start 2", "stop 2"]
    between = [sum(isinstance(x, Frame) for x in out[a + 1 : b]) for (a, _), (b, _) in zip(marks, marks[1:])]
    assert between == [13, 0, 25]  # 0.5 s (the turn's last frame partial) and 1.0 s of frames


def test_interrupt_drops_what_was_not_handed_out_and_reports_it(small_avatar):
    stream = ReplyStream(small_avatar, clock=ManualClock())

    async def run():
        stream.push(tts_speech(3.0), TTS_RATE_HZ)
        stream.end_reply("stop")
        seen = []
        async for item in stream:
            seen.append(item)
            if len(seen) == 10:
                cut = stream.interrupt()
                stream.push(tts_speech(0.4), TTS_RATE_HZ)
                stream.end_reply("stop 2")
            if isinstance(item, ReplyEnd):
                return seen, cut

    seen, cut = asyncio.run(asyncio.wait_for(run(), 60))
    stream.close()
    assert len(cut) == 1 and cut[0].interrupted and cut[0].frames == 10 and cut[0].samples_out == 10 * FRAME_SAMPLES
    assert seen[-1].marker == "stop 2"  # the first reply's end was dropped with it
    assert sum(isinstance(i, Frame) for i in seen[10:]) == 10  # only the new reply's 0.4 s


def test_take_pending_returns_the_audio_not_handed_out_in_order(small_avatar):
    stream = ReplyStream(small_avatar, clock=ManualClock())
    speech = tts_speech(2.0)

    async def run():
        stream.push(speech, TTS_RATE_HZ)
        stream.end_reply("stop")
        async for item in stream:
            return item, stream.take_pending()

    first, pending = asyncio.run(asyncio.wait_for(run(), 60))
    stream.close()
    audio = [p.audio for p in pending if p.audio is not None]
    assert pending[-1].mark.marker == "stop"
    assert np.array_equal(np.concatenate([first.audio] + audio)[:, 0], speech)


def test_bad_audio_is_refused_at_once(small_avatar):
    from lipstream.errors import BadAudioError

    stream = ReplyStream(small_avatar, clock=ManualClock())
    with pytest.raises(BadAudioError):
        stream.push(b"\x00\x01\x02", TTS_RATE_HZ)
    stream.close()
