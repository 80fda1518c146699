"""The Pipecat plugin in Pipecat's own test pipeline (`run_test`) and behind a real SmallWebRTC
transport, talking over loopback (host candidates only, no network) to an in-process aiortc
client that notes when each frame's packets arrive: what a browser would receive and show."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from pipecat.frames.frames import (
    EndFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.tests.utils import run_test
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from lipstream.integrations.bench import TTS_RATE_HZ, chunks, tts_speech
from lipstream.integrations.pipecat import LipstreamVideoService


def tts_reply(seconds: float, context: str = "c1") -> list:
    """A TTS reply as Pipecat's TTS services send it: started, 20 ms audio frames at 24 kHz, stopped."""
    audio = [TTSAudioRawFrame(c.tobytes(), TTS_RATE_HZ, 1, context_id=context) for c in chunks(tts_speech(seconds))]
    return [TTSStartedFrame(context_id=context), *audio, TTSStoppedFrame(context_id=context)]


def speech_images(frames) -> list[OutputImageRawFrame]:
    """The images of replies (not idle) among `frames`."""
    return [f for f in frames if isinstance(f, OutputImageRawFrame) and not f.metadata["lipstream"]["idle"]]


async def run_service(service: LipstreamVideoService, frames: list) -> list:
    """The frames `service` sends downstream for `frames` in `run_test` (metrics on)."""
    down, _ = await run_test(service, frames_to_send=frames, pipeline_params=PipelineParams(enable_metrics=True),
                             start_timeout=10)
    return list(down)


class Client:
    """A browser stand-in: receives the bot's audio and video and notes when each frame reached it.

    A frame's time is when its first RTP packet arrived, not when aiortc's receiver hands it out:
    that receiver holds audio until 4 more packets are in (80 ms) and video until the next frame
    starts (40 ms at 25 fps), a 40 ms skew of its own. A browser lines audio and video up by the
    sender's clock (RTP timestamps and RTCP sender reports), which on loopback is the packets'
    arrival."""

    def __init__(self):
        self.pc = RTCPeerConnection()
        self.audio: list[tuple[float, np.ndarray, int]] = []  # (arrival s, int16 mono samples, rate)
        self.video: list[tuple[float, np.ndarray]] = []
        self.tasks: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        arrivals = self._note_arrivals(receiver)
        self.tasks.append(asyncio.ensure_future(self._record(track, arrivals)))

    @staticmethod
    def _note_arrivals(receiver) -> dict[int, float]:
        """{RTP timestamp since the first packet's: perf_counter s of its first packet} for `receiver`,
        filled as packets come (the receiver maps frame pts the same way)."""
        arrivals: dict[int, float] = {}
        first: list[int] = []
        handle = receiver._handle_rtp_packet

        async def noted(packet, arrival_time_ms):
            if not first:
                first.append(packet.timestamp)
            arrivals.setdefault((packet.timestamp - first[0]) % (1 << 32), time.perf_counter())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = noted
        return arrivals

    async def _record(self, track, arrivals: dict[int, float]) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended
                return
            arrived = arrivals.get(frame.pts, time.perf_counter())
            if track.kind == "video":
                self.video.append((arrived, frame.to_ndarray(format="rgb24")))
            else:
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.audio.append((arrived, samples.astype(np.int16), frame.sample_rate))

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


async def talk(avatar, reply_s: float = 4.0) -> tuple[Client, float]:
    """A `reply_s` reply (after 1 s idle) from a bot with `LipstreamVideoService` before a
    SmallWebRTC output, to a Client over loopback; returns it and when the reply was sent (perf_counter s)."""
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
    started = time.perf_counter()
    await worker.queue_frames(tts_reply(reply_s))
    await asyncio.sleep(reply_s + 1.5)
    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 20)
    await client.close()
    await connection.disconnect()
    return client, started




def speech_span_s(samples: np.ndarray, rate: int) -> float:
    """From the first to the last loud sample (s) of int16 samples."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 1000)
    return (loud[-1] - loud[0]) / rate
