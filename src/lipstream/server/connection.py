"""One WebSocket client: its messages in, its session's frames out through a bounded outbox.

The receive loop parses each message (every malformed one gets an error; too many close the
connection), forwards audio to the session's worker and pauses reading while that worker has
too much of this session queued (backpressure reaches the client through TCP). Audio is taken
at most at `max_audio_rate` times real time (past a burst, reading pauses for the difference);
other messages at most CONTROL_RATE_PER_S a second (past a burst of CONTROL_BURST, the
connection is closed with RATE_LIMITED: nothing a client needs comes that fast). The
send loop drains the outbox: frames past their deadline are dropped and counted, and when a
slow client lets frames pile up past the preset's `queue_frames` the oldest is dropped, so a
client that doesn't read never grows the server's memory. Before it comes to that, the send loop
measures how fast the client takes what is written (lipstream.server.adaptive) and steps the
session's JPEG quality, frame size and frame rate down, and back up when the link recovers; no
frame is written while more than MAX_QUEUE_DELAY_S of them wait in the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
from starlette.websockets import WebSocket

from lipstream.audio.opus import OPUS_RATE_HZ, OpusDecoder
from lipstream.errors import LipstreamError
from lipstream.render.base import renderer_names
from lipstream.select.history import record_outcome
from lipstream.server import protocol as p
from lipstream.server.adaptive import AdaptiveQuality, Step, ladder
from lipstream.server.limits import TokenBucket
from lipstream.server.redact import public_message
from lipstream.server.state import ServerState
from lipstream.server.transport import SEND_METER
from lipstream.stream.audio_in import MAX_CHUNK_S, AudioFormat
from lipstream.stream.events import AudioOut, Dropped, Event, Failure, FrameOut, Status
from lipstream.session.presets import get_preset
from lipstream.stream.stats import SessionStats

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 20
MAX_QUEUED_MESSAGES = 512  # non-frame messages waiting for a slow client before it is cut off
STATS_INTERVAL_S = 1.0
END_TIMEOUT_S = 10.0
SEND_STALL_S = 15.0
CONTROL_RATE_PER_S = 5.0  # start, flush, switch, end, ping: messages per second on average
CONTROL_BURST = 20
SWITCH_COST = 4  # a switch builds a renderer or driver at the worker (10-50 ms of its CPU): 5 per burst
AUDIO_BURST_S = 5.0  # audio a session may send ahead of its rate limit
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_TRY_LATER = 1000, 1008, 1011, 1012, 1013
MAX_QUEUE_DELAY_S = 0.4  # frames wait in the outbox (and go stale there) while the socket holds more
LINK_POLL_S = 0.02  # how often a frame waiting for the socket to drain looks again


@dataclass
class _Close:
    code: int
    reason: str


class _Ended:
    """Marks where the final stats go: they are taken when it is sent, after the last frame."""


class Outbox:
    """Messages waiting to be sent, in order; at most `max_frames` of them frames."""

    def __init__(self, max_frames: int):
        self.max_frames = max_frames
        self.items: deque = deque()
        self.frames = 0
        self.ready = asyncio.Event()

    def put(self, item) -> FrameOut | None:
        """Queue an item; returns the oldest frame if it had to be dropped to make room."""
        dropped = None
        if isinstance(item, FrameOut):
            if self.frames >= self.max_frames:
                dropped = next(x for x in self.items if isinstance(x, FrameOut))
                self.items.remove(dropped)
                self.frames -= 1
            self.frames += 1
        self.items.append(item)
        self.ready.set()
        return dropped

    def put_first(self, *items) -> None:
        """Queue items ahead of everything else (a fatal error and the close)."""
        self.items.extendleft(reversed(items))
        self.ready.set()

    @property
    def overflowing(self) -> bool:
        return len(self.items) - self.frames > MAX_QUEUED_MESSAGES

    async def get(self, timeout: float):
        if not self.items:
            self.ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout)
            if not self.items:
                return None
        item = self.items.popleft()
        if isinstance(item, FrameOut):
            self.frames -= 1
        return item


class Connection:
    """Serves one WebSocket: at most one session on it."""

    def __init__(self, ws: WebSocket, state: ServerState):
        self.ws = ws
        self.state = state
        self.handle = None
        self.session_id: str | None = None  # as the client knows it (its own sessionId, if it gave one)
        self.key: str | None = None  # unique on this server: the worker's and /api/sessions' id
        self.preset = get_preset("low")
        self.format = "jpeg"
        self.framing = "json"
        self.defaults = AudioFormat()
        self.stats = SessionStats()
        self.outbox = Outbox(self.preset.queue_frames)
        self.turn_id = "turn-000"
        self.sequence = 0
        self.expected_chunk: int | None = None
        self.model_preference: str | None = None
        self.bad_messages = 0
        self.closing = False
        self.flushed = asyncio.Event()
        self.need_keyframe = False
        self.control_budget = TokenBucket(CONTROL_RATE_PER_S, CONTROL_BURST, state.clock.now)
        self.audio_budget = TokenBucket(state.settings.max_audio_rate, AUDIO_BURST_S, state.clock.now)
        self.audio_wait_s = 0.0  # how long to stop reading so that audio comes at most at its rate
        self.meter = (getattr(ws, "scope", None) or {}).get("extensions", {}).get(SEND_METER)
        self.written = 0  # bytes sent, where the server has no SendMeter (then all count as taken)
        self.adaptive: AdaptiveQuality | None = None
        self.opus: OpusDecoder | None = None  # the session's, once it sends Opus

    async def run(self, authorized: bool) -> None:
        await self.ws.accept()
        if not authorized:
            self._fail(p.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN",
                       CLOSE_POLICY)
        sender = asyncio.create_task(self._send_loop())
        receiver = asyncio.create_task(self._receive_loop())  # returns at once when closing
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done() and self.closing:  # let the send loop deliver what is queued, then close
                await asyncio.wait({sender}, timeout=END_TIMEOUT_S)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            self._release()

    # -- receiving ----------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while not self.closing:
            if self.audio_wait_s > 0:
                await asyncio.sleep(self.audio_wait_s)
                self.audio_wait_s = 0.0
            if self.handle is not None:
                await self.handle.wait_for_room()
            try:
                message = await asyncio.wait_for(self.ws.receive(), self.state.settings.idle_timeout_s)
            except TimeoutError:
                self._fail(p.TIMEOUT, f"nothing received for {self.state.settings.idle_timeout_s:g} s; closing",
                           CLOSE_NORMAL)
                return
            if message["type"] == "websocket.disconnect":
                return
            arrived_s = self.state.clock.now()
            try:
                if message.get("text") is not None:
                    parsed = p.parse_text(message["text"], self.defaults)
                elif message.get("bytes") is not None:
                    parsed = p.parse_binary(message["bytes"])
                else:
                    continue
                if isinstance(parsed, p.Audio) and parsed.fmt.encoding == "opus":
                    parsed = self._decode_opus(parsed)
                if not self._within_rate(parsed):
                    return
                await self._handle(parsed, arrived_s)
            except p.ProtocolError as exc:
                self._error(exc.code, str(exc), exc.fatal)
            except LipstreamError as exc:
                self._error(p.ERROR_CODES_BY_KIND.get(type(exc).__name__, p.INTERNAL), public_message(str(exc)),
                            False)

    def _within_rate(self, message: p.Message) -> bool:
        """Charge the message to its budget; False (and the connection closing) past the control rate."""
        if isinstance(message, p.Audio):
            seconds = len(message.data) / message.fmt.bytes_per_frame / message.fmt.sample_rate
            self.audio_wait_s = self.audio_budget.charge(seconds)
            return True
        if self.control_budget.take(SWITCH_COST if isinstance(message, p.Switch) else 1):
            return True
        self._fail(p.RATE_LIMITED, f"more than {CONTROL_BURST:g} control messages at once or "
                                   f"{CONTROL_RATE_PER_S:g} a second; closing", CLOSE_POLICY)
        return False

    def _decode_opus(self, audio: p.Audio) -> p.Audio:
        """An Opus packet as float32 PCM at 48 kHz, by the connection's one decoder (Opus decoding
        carries state from packet to packet); BadAudioError for data that isn't Opus."""
        channels = audio.fmt.channels
        if self.opus is None or self.opus.channels != channels:
            self.opus = OpusDecoder(channels)
        samples = self.opus.decode(audio.data)
        return replace(audio, data=samples.astype("<f4").tobytes(), fmt=AudioFormat(OPUS_RATE_HZ, channels, "f32"))

    async def _handle(self, message: p.Message, arrived_s: float) -> None:
        if isinstance(message, p.Start):
            await self._start(message)
        elif isinstance(message, p.Audio):
            await self._audio(message, arrived_s)
        elif isinstance(message, p.Ping):
            self._put(p.pong_json(message.id))
        elif self.handle is None:
            if isinstance(message, p.End):
                self._end_now()
            else:
                raise p.ProtocolError(p.NO_SESSION, "no session yet: send a start (or lipsync_audio) message first")
        elif isinstance(message, p.Flush):
            self.handle.flush()
        elif isinstance(message, p.Switch):
            self.handle.switch(message.renderer, message.driver, message.avatar)
        elif isinstance(message, p.End):
            await self._end()

    async def _start(self, start: p.Start) -> None:
        if self.handle is not None:
            raise p.ProtocolError(p.BAD_MESSAGE, f"session {self.session_id} is already running on this connection")
        sessions = self.state.sessions
        if len(sessions) >= self.state.settings.max_sessions:
            self._fail(p.SESSION_LIMIT, f"the server is at its limit of {self.state.settings.max_sessions} sessions; "
                                        "try again later", CLOSE_TRY_LATER)
            return
        key = uuid.uuid4().hex
        config = start.config
        if config.renderer is None and self.state.settings.renderer != "auto":
            config.renderer = self.state.settings.renderer
        sessions[key] = self  # hold the slot while the worker opens it
        try:
            self.handle = await self.state.pool.open(key, config, self._deliver)
        except BaseException:
            sessions.pop(key, None)
            raise
        self.key, self.session_id = key, start.session_id or key
        self.framing, self.defaults = start.framing, start.audio_format
        self.preset, self.format = get_preset(config.preset), config.format
        # Room for one burst (the frames a driver run, a flush or the longest chunk makes at once)
        # plus the preset's slack for a client that reads slowly.
        info = self.handle.info
        burst_s = (info["lookaheadMs"] + info["blockMs"]) / 1000 + MAX_CHUNK_S
        burst = math.ceil(burst_s * info["fps"]) + 1
        self.outbox.max_frames = self.preset.queue_frames + burst
        self.stats.renderer = self.handle.info["renderer"]
        self.adaptive = AdaptiveQuality(ladder(self.format, self.preset.jpeg_quality, info["fps"]),
                                        self.state.clock.now)
        self.stats.quality = self.adaptive.snapshot
        self.state.metrics.sessions.inc()
        self.state.metrics.sessions_total.inc()
        self._put(p.status_json("started", self.session_id, **self.handle.info))

    async def _audio(self, audio: p.Audio, arrived_s: float) -> None:
        if self.handle is None:
            if audio.seed_start is None:
                raise p.ProtocolError(p.NO_SESSION, "no session yet: send a start message before audio")
            start = audio.seed_start
            if audio.model_preference in renderer_names():
                start.config.renderer = audio.model_preference
            await self._start(start)
            if self.handle is None:
                return
            self.model_preference = audio.model_preference
            if audio.model_preference and audio.model_preference != self.handle.info["renderer"]:
                self._put(p.status_json("notice", self.session_id, message=(
                    f"modelPreference {audio.model_preference!r} is not a renderer here; using "
                    f"{self.handle.info['renderer']} (renderers: {', '.join(renderer_names())})")))
        elif audio.session_id is not None and audio.session_id != self.session_id:
            raise p.ProtocolError(p.BAD_MESSAGE, f"this connection carries session {self.session_id}, not "
                                                 f"{audio.session_id}; open one connection per session")
        elif audio.model_preference and audio.model_preference != self.model_preference:
            self.model_preference = audio.model_preference
            if audio.model_preference in renderer_names():
                self.handle.switch(audio.model_preference, None)
        if audio.sequence is not None:
            if self.expected_chunk is not None and audio.sequence < self.expected_chunk:
                raise p.ProtocolError(p.BAD_MESSAGE, f"audio chunk {audio.sequence} repeats or comes after a later "
                                                     f"one (expected {self.expected_chunk} or more); ignored")
            self.expected_chunk = audio.sequence + 1
        self.handle.audio(audio.data, audio.fmt, arrived_s)
        self.stats.audio_quality.add(audio.fmt.samples(audio.data), audio.fmt.sample_rate)
        self.stats.audio_ms += len(audio.data) / audio.fmt.bytes_per_frame / audio.fmt.sample_rate * 1000

    async def _end(self) -> None:
        self.flushed.clear()
        self.handle.flush()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flushed.wait(), END_TIMEOUT_S)
        self._end_now()

    def go_away(self, close_in_s: float) -> None:
        """The server is going away (a Ray Serve replica scaled down or redeployed): a `going_away`
        status now with `closeInMs`, the time the client has to reconnect, and the session ends
        (its final stats, close code 1012) after that."""
        self._put(p.status_json("going_away", self.session_id, closeInMs=round(close_in_s * 1000)))

        def close() -> None:
            if not self.closing:
                self._put(_Ended())
                self._put(_Close(CLOSE_RESTART, "server going away"))
                self.closing = True

        asyncio.get_running_loop().call_later(close_in_s, close)

    def _end_now(self) -> None:
        self._put(_Ended())
        self._put(_Close(CLOSE_NORMAL, "session ended"))
        self.closing = True

    # -- events from the worker ---------------------------------------------------------------

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, FrameOut):
                dropped = self.outbox.put(event)
                if dropped is not None:
                    self._dropped(1, "slow_client", dropped)
            elif isinstance(event, AudioOut):
                self._put(p.audio_binary(event) if self.framing == "binary" else p.audio_json(event, self.session_id))
            elif isinstance(event, Status):
                self._status(event)
            elif isinstance(event, Dropped):
                self._dropped(event.count, event.reason)
            elif isinstance(event, Failure):
                code = p.ERROR_CODES_BY_KIND.get(event.kind, p.INTERNAL)
                message = public_message(event.message)
                if event.fatal:
                    self._release()
                    self._fail(code, message, CLOSE_INTERNAL)
                else:
                    self._error(code, message, False)

    def _status(self, status: Status) -> None:
        detail = dict(status.detail)
        if status.event == "turn_started":
            self.turn_id = f"turn-{detail['turn']:03d}"
            detail["turnId"] = self.turn_id
        elif status.event == "fallback":
            self.stats.fallbacks += 1
            self.stats.renderer = detail["to_renderer"]
            self.state.metrics.fallbacks.labels(detail["from_renderer"], detail["to_renderer"], detail["reason"]).inc()
        elif status.event == "render_rate":
            self.state.metrics.render_rate.labels(self.preset.name, "half" if detail["halfRate"] else "full").inc()
        elif status.event == "switched":
            self.stats.renderer = detail["renderer"]
        elif status.event == "flushed":
            self.flushed.set()
        self._put(p.status_json(status.event, self.session_id, **detail))

    def _dropped(self, count: int, reason: str, frame: FrameOut | None = None) -> None:
        if reason == "silent":
            self.stats.silent_skipped += count
            return
        if reason == "thinned":
            self.stats.thinned += count
            self.state.metrics.thinned.labels(self.preset.name).inc(count)
            return
        self.stats.dropped[reason] += count
        self.state.metrics.dropped.labels(self.preset.name, reason).inc(count)
        if frame is not None and self.format == "h264" and self.handle is not None:
            self.need_keyframe = True  # the decoder lost a reference: wait for a fresh IDR frame
            self.handle.request_keyframe()

    # -- sending ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        next_stats = self.state.clock.now() + STATS_INTERVAL_S
        while True:
            item = await self.outbox.get(timeout=STATS_INTERVAL_S)
            if item is not None:
                if not await self._send_item(item):
                    return
            self._adapt()
            if self.handle is not None and self.state.clock.now() >= next_stats:
                next_stats = self.state.clock.now() + STATS_INTERVAL_S
                await self._send(p.status_json("stats", self.session_id, **self.stats.snapshot()))

    async def _send_item(self, item) -> bool:
        """Send one queued item; False once the connection is closed."""
        if isinstance(item, _Close):
            await self.ws.close(item.code, item.reason)
            return False
        if isinstance(item, FrameOut):
            await self._send_frame(item)
        elif isinstance(item, _Ended):
            await self._send(p.status_json("ended", self.session_id, stats=self.stats.snapshot()))
        else:
            await self._send(item)
        return True

    async def _send_frame(self, frame: FrameOut) -> None:
        await self._wait_for_link()
        if self.state.clock.now() > frame.deadline_s:
            self._dropped(1, "late", frame)
            return
        if self.need_keyframe:
            if not frame.keyframe:
                self.stats.dropped["awaiting_keyframe"] += 1
                return
            self.need_keyframe = False
        if self.framing == "binary":
            await self._send(p.frame_binary(frame, self.sequence, self.format))
        else:
            await self._send(p.frame_json(frame, self.session_id, self.turn_id, self.sequence,
                                          int(time.time() * 1000), self.format))
        self.sequence += 1
        if frame.interpolated:
            self.stats.interpolated += 1
            self.state.metrics.interpolated.labels(self.preset.name).inc()
        if self.adaptive is not None:
            self.adaptive.frame_sent(self.meter.written if self.meter is not None else self.written)
            self._adapt()
        latency_s = self.state.clock.now() - frame.ready_s
        self.stats.sent(latency_s * 1000, frame.idle)
        self.state.metrics.frame_sent(self.preset.name, frame.idle, latency_s)
        if frame.turn_arrived_s is not None:
            first_s = self.state.clock.now() - frame.turn_arrived_s
            self.stats.first_frame(first_s * 1000)
            self.state.metrics.first_frame.labels(self.preset.name).observe(first_s)

    async def _send(self, data: str | bytes) -> None:
        """Send one message; a client that takes none for SEND_STALL_S is cut off (the send loop
        ends, which ends the connection)."""
        send = self.ws.send_bytes(data) if isinstance(data, bytes) else self.ws.send_text(data)
        await asyncio.wait_for(send, SEND_STALL_S)
        self.written += len(data)

    # -- adapting to the client's link --------------------------------------------------------

    def _adapt(self) -> None:
        """Read how much the client has taken; step the output level if the controller says so."""
        if self.adaptive is None or self.handle is None:
            return
        if self.meter is not None:
            queued = self.meter.queued()
            step = self.adaptive.update(self.meter.written - queued, queued)
        else:
            step = self.adaptive.update(self.written, 0)
        if step is not None:
            self._stepped(step)

    def _stepped(self, step: Step) -> None:
        self.handle.set_level(step.level)
        self.state.metrics.websocket_quality_steps.labels(self.preset.name, step.direction).inc()
        self._put(p.status_json("quality", self.session_id, direction=step.direction, **self.adaptive.snapshot()))

    async def _wait_for_link(self) -> None:
        """Hold the next frame while the socket holds more than MAX_QUEUE_DELAY_S of them (a burst
        on a fast link drains by the next look, LINK_POLL_S later); it may go stale waiting, and
        is then dropped as late. A client that takes nothing for SEND_STALL_S is cut off."""
        if self.adaptive is None or self.meter is None:
            return
        give_up = asyncio.get_running_loop().time() + SEND_STALL_S
        self._adapt()
        while self.adaptive.delay_s > MAX_QUEUE_DELAY_S:
            if asyncio.get_running_loop().time() > give_up:
                raise asyncio.TimeoutError
            await asyncio.sleep(LINK_POLL_S)
            self._adapt()

    def _put(self, item) -> None:
        self.outbox.put(item)
        if self.outbox.overflowing and not self.closing:
            self._fail(p.BUFFER_OVERFLOW, "the client reads too slowly; closing", CLOSE_POLICY)

    def _error(self, code: str, message: str, fatal: bool) -> None:
        self.stats.errors += 1
        self.state.metrics.errors.labels(code).inc()
        if fatal:
            self._fail(code, message, CLOSE_POLICY)
            return
        self._put(p.error_json(code, message, False, self.session_id))
        self.bad_messages += 1
        if self.bad_messages > MAX_BAD_MESSAGES:
            self._fail(p.BAD_MESSAGE, f"more than {MAX_BAD_MESSAGES} bad messages; closing", CLOSE_POLICY)

    def _fail(self, code: str, message: str, close_code: int) -> None:
        """Send a fatal error ahead of anything queued, then close."""
        if self.closing:
            return
        self.state.metrics.errors.labels(code).inc()
        self.closing = True
        self.outbox.put_first(p.error_json(code, message, True, self.session_id), _Close(close_code, code))

    def _release(self) -> None:
        if self.key is not None and self.state.sessions.get(self.key) is self:
            del self.state.sessions[self.key]
            self.state.metrics.sessions.dec()
        if self.handle is not None and self.stats.frames_sent:  # its first renderer's record in use
            latencies = self.stats.latencies_ms
            p95 = float(np.percentile(latencies, 95)) if latencies else None
            asyncio.get_running_loop().run_in_executor(None, record_outcome, self.handle.info["renderer"], p95,
                                                       self.stats.fallbacks == 0, "session")
        if self.handle is not None:
            self.handle.close()
            self.handle = None
