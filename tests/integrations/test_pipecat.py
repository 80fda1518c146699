"""The Pipecat plugin in Pipecat's own test pipeline (`pipecat.tests.utils.run_test`)."""

from __future__ import annotations

import asyncio
import py_compile
from pathlib import Path

import numpy as np
import pytest
from lipstream.integrations.bench import TTS_RATE_HZ, tts_speech

pytest.importorskip("pipecat", reason="the Pipecat plugin needs: pip install 'lipstream[pipecat]'")

from pipecat.frames.frames import (  # noqa: E402
    InterruptionFrame,
    MetricsFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData  # noqa: E402
from pipecat.tests.utils import SleepFrame  # noqa: E402

from lipstream.errors import RenderFailedError  # noqa: E402
from lipstream.integrations.bench.pipecat_runs import run_service, speech_images, tts_reply  # noqa: E402
from lipstream.integrations.pipecat import LipstreamVideoService  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(service, frames):
    return asyncio.run(run_service(service, frames))


def test_a_reply_comes_out_as_images_with_its_audio_then_the_stop(small_avatar):
    service = LipstreamVideoService(small_avatar)
    down = _run(service, [TextFrame("hello"), *tts_reply(3.0)])
    images = speech_images(down)
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert 72 <= len(images) <= 78  # 75 +- 3
    assert all(i.sync_with_audio and i.size == (256, 256) and i.format == "RGB" for i in images)
    assert abs(sum(f.num_frames for f in audio) / TTS_RATE_HZ - 3.0) <= 0.1
    assert np.array_equal(np.frombuffer(b"".join(f.audio for f in audio), np.int16), tts_speech(3.0))
    assert all(f.sample_rate == TTS_RATE_HZ and f.context_id == "c1" for f in audio)
    kinds = [type(f) for f in down]
    last_audio = max(i for i, k in enumerate(kinds) if k is TTSAudioRawFrame)
    assert kinds.index(TTSStoppedFrame) > last_audio and kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame)
    # each image is followed by exactly the audio it shows (1/25 s)
    first, last = down.index(images[0]), down.index(images[-1])
    between = [f for f in down[first:last] if isinstance(f, (TTSAudioRawFrame, OutputImageRawFrame))]
    assert [type(f) for f in between] == [OutputImageRawFrame, TTSAudioRawFrame] * (len(between) // 2)
    assert all(f.num_frames == 960 for f in between if isinstance(f, TTSAudioRawFrame))
    assert any(isinstance(d, TTFBMetricsData) and d.value > 0 for f in down if isinstance(f, MetricsFrame)
               for d in f.data)
    assert TextFrame in kinds  # other frames pass


def test_idle_images_come_between_replies(small_avatar):
    service = LipstreamVideoService(small_avatar)
    down = _run(service, [SleepFrame(1.0), *tts_reply(0.4), SleepFrame(1.0)])
    idle = [f for f in down if isinstance(f, OutputImageRawFrame) and f.metadata["lipstream"]["idle"]]
    assert len(idle) >= 2 * 20 * 0.8  # >= 20 fps in the two quiet seconds, a little slack for start-up


def test_an_interruption_stops_the_reply_and_is_passed_on(small_avatar):
    service = LipstreamVideoService(small_avatar)
    reply = tts_reply(3.0)[:-1]  # interrupted before the TTS stops
    down = _run(service, [*reply, SleepFrame(0.3), InterruptionFrame()])
    audio_s = sum(f.num_frames for f in down if isinstance(f, TTSAudioRawFrame)) / TTS_RATE_HZ
    assert audio_s < 2.0 and len(speech_images(down)) < 50
    assert any(isinstance(f, InterruptionFrame) for f in down)


def test_if_rendering_fails_the_audio_goes_on_unchanged(small_avatar):
    service = LipstreamVideoService(small_avatar)
    polls = 0
    poll = service.stream.session.poll

    def failing_poll(*args):
        nonlocal polls
        polls += 1
        if polls > 3:
            raise RenderFailedError("the renderer broke (test)")
        return poll(*args)

    service.stream.session.poll = failing_poll
    down = _run(service, tts_reply(2.0))
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert np.array_equal(np.frombuffer(audio, np.int16), tts_speech(2.0))
    assert service.passthrough
    assert [type(f) for f in down].count(TTSStoppedFrame) == 1



@pytest.mark.parametrize("name", ["livekit_agent.py", "pipecat_bot.py"])
def test_the_examples_compile(name):
    py_compile.compile(str(EXAMPLES / name), doraise=True)
