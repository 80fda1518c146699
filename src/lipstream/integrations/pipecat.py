"""lipstream as a Pipecat video service: a talking avatar rendered in the bot's own process.

    from lipstream.integrations.pipecat import LipstreamVideoService

    avatar = LipstreamVideoService("default")          # or a photo, a video, a prepared package
    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts, avatar, transport.output(), bot_agg])

Put it right after the TTS. It takes the TTS's `TTSAudioRawFrame`s and sends, for each video
frame, an `OutputImageRawFrame` (RGB, `sync_with_audio=True`: the output transport shows it once
the audio before it has played) and exactly the audio that frame shows, unchanged, at the TTS's
rate. Replies go out at playing speed (a little ahead), so an `InterruptionFrame` stops
the mouth and the voice at once; it is passed on. `TTSStoppedFrame` is held until the reply's
last audio has gone out. Between replies idle images come at the frame rate. If rendering
fails, the audio goes on without video. Time to first frame is reported as TTFB metrics.
The output transport needs `video_out_enabled=True` and `video_out_is_live=False` (images that
come with the audio are shown by its camera loop at `video_out_framerate`, set it to the fps).
Needs `pip install 'lipstream[pipecat]'` (pipecat-ai 1.14).
"""

from __future__ import annotations

import asyncio
import os

from lipstream.api import Avatar
from lipstream.audio.pcm import to_pcm16
from lipstream.errors import NotSupportedError
from lipstream.integrations.replies import ReplyEnd, ReplyStats, ReplyStream
from lipstream.session import Clock, Frame, Preset

try:
    from loguru import logger
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        InterruptionFrame,
        OutputImageRawFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.frames.frames import Frame as PipecatFrame
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.ai_service import AIService
    from pipecat.services.settings import ServiceSettings
except ImportError as exc:
    raise NotSupportedError(
        "lipstream.integrations.pipecat needs Pipecat: pip install 'lipstream[pipecat]'"
    ) from exc

__all__ = ["LipstreamVideoService"]

# How far ahead of playing speed a reply's frames go out (the transport's audio buffer absorbs it).
PACE_LEAD_S = 0.3
# How long an EndFrame waits for the queued replies to go out before it is passed on.
END_WAIT_S = 30.0
_POLL_S = 0.02


class LipstreamVideoService(AIService):
    """A Pipecat service that turns the TTS's audio into a lip-synced avatar (see the module docstring).

    avatar: "default", a photo or video of one face (prepared on first use), a package made by
    `lipstream prepare`, or an opened `lipstream.Avatar`; loaded at construction. driver /
    renderer / fps / size (width, height) / preset: as `lipstream.Session` takes them (None: the
    defaults: the avatar's fps and size, preset "low"). clock: tests.
    """

    def __init__(self, avatar: str | os.PathLike | Avatar = "default", *, driver: str | None = None,
                 renderer: str | None = None, fps: float | None = None,
                 size: tuple[int | None, int | None] | None = None, preset: str | Preset | None = None,
                 clock: Clock | None = None, **kwargs):
        super().__init__(settings=ServiceSettings(model=None), **kwargs)
        self.stream = ReplyStream(avatar, driver=driver, renderer=renderer, fps=fps, size=size, preset=preset,
                                  clock=clock)
        self.passthrough = False  # rendering failed: audio goes on unchanged, without video
        self._output_task: asyncio.Task | None = None
        self._context_id: str | None = None
        self._replying = False  # the current reply's first audio has come (TTFB started)
        self._ends_pending = 0  # TTSStoppedFrames held until their reply has gone out
        self._pace_from: tuple[float, int] | None = None  # (clock s, frames out) of the reply's first frame

    @property
    def fps(self) -> float:
        return self.stream.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the images."""
        return self.stream.size

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: PipecatFrame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            if self._output_task is None:
                self._output_task = self.create_task(self._emit())
        elif isinstance(frame, TTSAudioRawFrame) and not self.passthrough:
            if not self._replying:
                self._replying = True
                await self.start_ttfb_metrics()
            self._context_id = frame.context_id
            self.stream.push(frame.audio, frame.sample_rate, frame.num_channels)
        elif isinstance(frame, TTSStartedFrame) and not self.passthrough:
            self.stream.mark(frame)
        elif isinstance(frame, TTSStoppedFrame) and not self.passthrough:
            self._replying = False
            self._ends_pending += 1
            self.stream.end_reply(frame)
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._drain(END_WAIT_S)
            await self._stop_output()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop_output()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop_output()

    # -- inside --------------------------------------------------------------------------------

    def _interrupt(self) -> None:
        for reply in self.stream.interrupt():
            _log_reply(reply)
        self._replying = False
        self._ends_pending = 0
        self._pace_from = None

    async def _emit(self) -> None:
        """Push what the stream hands out: images with their audio at playing speed, idle
        images, and the TTS frames it holds, in order; on a rendering failure, pass audio on."""
        try:
            async for item in self.stream:
                if isinstance(item, ReplyEnd):
                    _log_reply(item.stats)
                    self._pace_from = None
                    self._ends_pending -= 1
                    if item.marker is not None:
                        await self.push_frame(item.marker)
                elif isinstance(item, Frame):
                    await self._push_frame_and_audio(item)
                else:
                    await self.push_frame(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc)

    async def _push_frame_and_audio(self, frame: Frame) -> None:
        if not frame.idle:
            generation = self.stream.generation
            await self._pace()
            if generation != self.stream.generation:  # interrupted while waiting
                return
            if self._pace_from[1] == 1:
                await self.stop_ttfb_metrics()
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=self.size, format="RGB")
        image.sync_with_audio = True
        image.metadata["lipstream"] = {"index": frame.index, "pts": frame.pts, "idle": frame.idle}
        await self.push_frame(image)
        if len(frame.audio):
            await self.push_frame(TTSAudioRawFrame(to_pcm16(frame.audio), frame.sample_rate, frame.channels,
                                                   context_id=self._context_id))

    async def _pace(self) -> None:
        """Wait until the reply's next frame is due: PACE_LEAD_S ahead of playing speed from its
        first frame (frames that come late go at once)."""
        now = self.stream.clock.now()
        if self._pace_from is None:
            self._pace_from = (now, 0)
        start, sent = self._pace_from
        self._pace_from = (start, sent + 1)
        wait = start + sent / self.fps - PACE_LEAD_S - now
        if wait > 0:
            await asyncio.sleep(wait)

    async def _fail(self, exc: Exception) -> None:
        """Rendering failed: from now on the audio (and the held TTS frames) go on without video."""
        logger.error(f"{self}: rendering failed ({exc}); passing the audio on without video")
        self.passthrough = True
        for pending in self.stream.take_pending():
            if pending.audio is not None:
                await self.push_frame(TTSAudioRawFrame(to_pcm16(pending.audio), pending.sample_rate,
                                                       pending.audio.shape[1], context_id=self._context_id))
            elif isinstance(pending.mark, ReplyEnd):
                await self.push_frame(pending.mark.marker)
            else:
                await self.push_frame(pending.mark)
        self.stream.close()

    async def _drain(self, timeout_s: float) -> None:
        """Wait (at most timeout_s) until every reply pushed so far has gone out."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while (self._ends_pending or self.stream.busy()) and not self.passthrough and loop.time() < end:
            await asyncio.sleep(_POLL_S)

    async def _stop_output(self) -> None:
        if self._output_task is not None:
            await self.cancel_task(self._output_task)
            self._output_task = None
        self.stream.close()


def _log_reply(reply: ReplyStats) -> None:
    ttff = reply.time_to_first_frame_s
    logger.debug(f"lipstream reply {reply.number}{' (interrupted)' if reply.interrupted else ''}: "
                 f"{reply.seconds_out:.2f} s of audio in {reply.frames} frames, first frame "
                 f"{'-' if ttff is None else f'{ttff * 1000:.0f} ms'} after its first audio, "
                 f"{reply.dropped} frames dropped")
