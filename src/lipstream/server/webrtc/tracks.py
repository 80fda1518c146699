"""The peer's outgoing tracks, both read from one Playout: the avatar (video) and the voice
(the frames' own audio, Opus), each paced from the playout's start plus its timestamps.

Also the incoming side: the client's audio track (Opus, any layout) as 48 kHz mono PCM16 chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from lipstream.server.webrtc.playout import OUT_RATE_HZ, VIDEO_CLOCK_RATE, Placed, Playout
from lipstream.server.webrtc.quality import Rung

AUDIO_TIME_BASE = Fraction(1, OUT_RATE_HZ)
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
FRAME_SLACK = 0.25  # a frame this share of a period early still counts as the next one (fps steps)


class VoiceTrack(MediaStreamTrack):
    """The frames' audio as 20 ms mono packets at 48 kHz, sent when due (silence in between)."""

    kind = "audio"

    def __init__(self, playout: Playout):
        super().__init__()
        self.playout = playout

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        p = self.playout
        p.begin()
        await _sleep_until(p.due_s(p.audio_sent), p.now)
        tick, samples = p.take_audio()
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples))
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = OUT_RATE_HZ, tick, AUDIO_TIME_BASE
        return frame


class AvatarTrack(MediaStreamTrack):
    """The frames' images, each sent when its tick is due; the rung (from quality) sets the frame
    size and thins the frame rate. `shape` is (height, width) of the raw RGB frames;
    `on_sent(placed)` is called as each frame goes out (metrics)."""

    kind = "video"

    def __init__(self, playout: Playout, shape: tuple[int, int], rung: Rung,
                 on_sent: Callable[[Placed], None] = lambda placed: None):
        super().__init__()
        self.playout = playout
        self.shape = shape
        self.rung = rung
        self.on_sent = on_sent
        self.ready = asyncio.Event()  # set when a frame is placed
        self._last_tick: int | None = None

    def size(self) -> tuple[int, int]:
        """(width, height) sent at the current rung: even numbers, as the encoders need."""
        height, width = self.shape
        return max(2, round(width * self.rung.scale / 2) * 2), max(2, round(height * self.rung.scale / 2) * 2)

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            self.playout.begin()
            placed = await self._next()
            await _sleep_until(self.playout.due_s(placed.tick), self.playout.now)
            period = OUT_RATE_HZ / self.rung.fps
            if self._last_tick is not None and placed.tick - self._last_tick < period * (1 - FRAME_SLACK):
                continue  # thinned out at a lower frame rate
            self._last_tick = placed.tick
            frame = av.VideoFrame.from_ndarray(self._image(placed), format="rgb24")
            frame.pts, frame.time_base = placed.video_pts, VIDEO_TIME_BASE
            self.on_sent(placed)
            return frame

    async def _next(self) -> Placed:
        while not self.playout.video:
            self.ready.clear()
            await self.ready.wait()
        return self.playout.video.popleft()

    def _image(self, placed: Placed) -> np.ndarray:
        height, width = self.shape
        image = np.frombuffer(placed.frame.data, np.uint8).reshape(height, width, 3)
        size = self.size()
        if size != (width, height):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image


async def pcm_chunks(track: MediaStreamTrack, chunk_s: float) -> AsyncIterator[bytes]:
    """The incoming audio track as PCM16 mono chunks of `chunk_s` at OUT_RATE_HZ (the last may
    be shorter); ends when the track does."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=OUT_RATE_HZ)
    chunk_bytes = round(chunk_s * OUT_RATE_HZ) * 2
    pending = bytearray()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            break
        for out in resampler.resample(frame):
            pending += out.to_ndarray().tobytes()
        while len(pending) >= chunk_bytes:
            yield bytes(pending[:chunk_bytes])
            del pending[:chunk_bytes]
    if pending:
        yield bytes(pending)


async def _sleep_until(due_s: float, now: Callable[[], float]) -> None:
    wait = due_s - now()
    if wait > 0:
        await asyncio.sleep(wait)
