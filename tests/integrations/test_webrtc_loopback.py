"""The Pipecat plugin behind a real SmallWebRTC transport, to an in-process aiortc client over
loopback (host candidates only, no network): what a browser would receive, reassembled by when each
frame's first packet arrived into an mp4 and measured with lipstream eval."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lipstream.integrations.bench import TTS_RATE_HZ, sync_offset_ms, tts_speech

pytest.importorskip("pipecat.transports.smallwebrtc.transport",
                    reason="the WebRTC loopback needs: pip install 'lipstream[pipecat]' (pipecat-ai[webrtc])")

from lipstream.integrations.bench.pipecat_runs import speech_span_s, talk  # noqa: E402

REPLY_S = 6.0
# The bar is 40 ms, measured by `python -m lipstream.integrations.bench` (docs/integrations.md); this
# real-time run shares 2 cores with the rest of the suite, whose load delays frames by tens of ms,
# so it asserts two frames: enough to catch a systematic error such as AVSynchronizer's ~100 ms.
SYNC_MS = 80.0


def test_a_browser_gets_the_reply_in_sync(small_avatar, tmp_path):
    client, started = asyncio.run(talk(small_avatar, REPLY_S))
    audio, rate = client.timed_audio()
    heard = speech_span_s(np.concatenate([s for _, s in audio]), rate)
    sent = speech_span_s(tts_speech(REPLY_S), TTS_RATE_HZ)
    # the whole reply, once: a replay would double it; the transport fills the gaps of a busy machine
    # with silence, which stretches the span (1.16x with both cores kept busy)
    assert sent - 0.05 <= heard < 1.5 * sent
    during = [t for t, _ in client.video if started <= t <= started + REPLY_S]
    # video keeps coming while it talks: frames in every second of it, no stall (the frame rate,
    # >= 20 fps, is the bench's bar: on a loaded machine this run shares the 2 cores with the suite)
    per_second = np.histogram(during, bins=int(REPLY_S), range=(started, started + REPLY_S))[0]
    assert per_second.min() >= 5, f"frames per second of the reply: {per_second.tolist()}"
    offset = sync_offset_ms(tmp_path / "webrtc.mp4", client.video, audio, rate, 25)
    assert abs(offset) <= SYNC_MS, f"A/V offset {offset:.0f} ms"
