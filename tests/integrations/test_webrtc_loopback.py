"""The Pipecat plugin behind a real SmallWebRTC transport, to an in-process aiortc client over
loopback (host candidates only, no network): what a browser would receive, reassembled by arrival
time into an mp4 and measured with lipstream eval."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from recording import TTS_RATE_HZ, chunks, tts_speech, write_timed_mp4

pytest.importorskip("pipecat.transports.smallwebrtc.transport",
                    reason="the WebRTC loopback needs: pip install 'lipstream[pipecat]' (pipecat-ai[webrtc])")

from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from pipecat.frames.frames import EndFrame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection  # noqa: E402
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from lipstream.evaluate import evaluate_video_sync  # noqa: E402
from lipstream.integrations.pipecat import LipstreamVideoService  # noqa: E402

REPLY_S = 4.0
SYNC_MS = 40.0


class Client:
    """A browser stand-in: receives the bot's audio and video and notes when each frame arrived."""

    def __init__(self):
        self.pc = RTCPeerConnection()
        self.audio: list[tuple[float, np.ndarray, int]] = []  # (arrival s, int16 mono samples, rate)
        self.video: list[tuple[float, np.ndarray]] = []
        self.tasks: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        self.tasks.append(asyncio.ensure_future(self._record(track)))

    async def _record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended
                return
            now = time.perf_counter()
            if track.kind == "video":
                self.video.append((now, frame.to_ndarray(format="rgb24")))
            else:
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.audio.append((now, samples.astype(np.int16), frame.sample_rate))

    async def offer(self) -> RTCSessionDescription:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def timed_audio(self) -> tuple[list[tuple[float, np.ndarray]], int]:
        """The received audio as one stream from its first frame's arrival (the jitter buffer
        plays it at a steady rate), as (time s, samples) pieces at its rate."""
        rate = self.audio[0][2]
        start, played, out = self.audio[0][0], 0, []
        for _, samples, _ in self.audio:
            out.append((start + played / rate, samples))
            played += len(samples)
        return out, rate


async def _talk(avatar) -> tuple[Client, float]:
    service = LipstreamVideoService(avatar)
    width, height = service.size
    connection = SmallWebRTCConnection(ice_servers=[])
    client = Client()
    offer = await client.offer()
    await connection.initialize(sdp=offer.sdp, type=offer.type)
    answer = connection.get_answer()
    await client.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    transport = SmallWebRTCTransport(connection, TransportParams(
        audio_out_enabled=True, video_out_enabled=True, video_out_is_live=False, video_out_width=width,
        video_out_height=height, video_out_framerate=round(service.fps)))
    connected = asyncio.Event()

    @transport.event_handler("on_client_connected")
    async def on_connected(transport, client_connection):
        connected.set()

    worker = PipelineWorker(Pipeline([service, transport.output()]), params=PipelineParams(),
                            cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    await asyncio.wait_for(connected.wait(), 20)
    await asyncio.sleep(1.0)  # idle images first
    audio = [TTSAudioRawFrame(c.tobytes(), TTS_RATE_HZ, 1, context_id="c1") for c in chunks(tts_speech(REPLY_S))]
    started = time.perf_counter()
    await worker.queue_frames([TTSStartedFrame(context_id="c1"), *audio, TTSStoppedFrame(context_id="c1")])
    await asyncio.sleep(REPLY_S + 1.5)
    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 20)
    await client.close()
    await connection.disconnect()
    return client, started


def _speech_span_s(samples: np.ndarray, rate: int) -> float:
    """From the first to the last loud sample (s)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 1000)
    return (loud[-1] - loud[0]) / rate


def test_a_browser_gets_the_reply_in_sync(small_avatar, tmp_path):
    client, started = asyncio.run(_talk(small_avatar))
    audio, rate = client.timed_audio()
    heard = _speech_span_s(np.concatenate([s for _, s in audio]), rate)
    sent = _speech_span_s(tts_speech(REPLY_S), TTS_RATE_HZ)
    assert sent - 0.05 <= heard <= sent + 0.25  # the whole reply, once (a gap if the busy machine fell behind)
    during = [t for t, _ in client.video if started <= t <= started + REPLY_S]
    assert len(during) >= 20 * REPLY_S * 0.9  # video keeps coming (>= 20 fps) while it talks
    video = write_timed_mp4(tmp_path / "webrtc.mp4", client.video, audio, rate, 25)
    offset = evaluate_video_sync(video).offset_ms
    assert abs(offset) <= SYNC_MS, f"A/V offset {offset:.0f} ms"
