"""One WebRTC client: its RTCPeerConnection and the session behind it (POST /webrtc/offer).

The session runs on the server's worker pool like a WebSocket's (same limit, metrics and
/api/sessions), asked for raw frames that each carry their exact audio. The client's audio track
is pushed to it in 40 ms chunks at 48 kHz; its frames go on one Playout that the avatar and
voice tracks read. A data channel the client opens (any label) gets the protocol's status
messages: started, stats each second, turns, quality steps, errors. Closing the peer connection,
its failure, or no connection within `webrtc_connect_timeout_s` frees the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from lipstream.server import protocol as p
from lipstream.server.redact import public_message
from lipstream.server.state import ServerState
from lipstream.server.webrtc.playout import OUT_RATE_HZ, Placed, Playout
from lipstream.server.webrtc.quality import QualityLadder, Step
from lipstream.server.webrtc.tracks import AvatarTrack, VoiceTrack, pcm_chunks
from lipstream.session.presets import get_preset
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.events import Dropped, Event, Failure, FrameOut, Status
from lipstream.stream.session import SessionConfig
from lipstream.stream.stats import SessionStats

log = logging.getLogger(__name__)

CHUNK_S = 0.04  # audio pushed to the session at a time
STATS_INTERVAL_S = 1.0
SENT_WINDOW_S = 1.0  # the video bitrate sent is measured over at least this (an estimate's comparison)
MARGIN_EXTRA_S = 0.08  # playout margin beyond the preset's driver block (frames' arrival jitter)
IN_FORMAT = AudioFormat(OUT_RATE_HZ, 1, "pcm16")


class BadOffer(ValueError):
    """The offer is not SDP this server can answer (the endpoint answers 400 BAD_SDP)."""


class WebRtcPeer:
    """Serves one peer connection (see the module docstring). `answer` sets it up; `close` ends it."""

    format = "webrtc"

    def __init__(self, state: ServerState, ice_servers: list[dict]):
        """ice_servers: RTCIceServer dicts (ServerSettings.ice_server_list)."""
        self.state = state
        self.key = self.session_id = uuid.uuid4().hex
        self.preset = get_preset("low")
        self.stats = SessionStats()
        self.ladder = QualityLadder()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**s) for s in ice_servers]))
        self.handle = None
        self.playout: Playout | None = None
        self.video: AvatarTrack | None = None
        self.channel = None
        self.closed = False
        self._sent_marks: deque[tuple[float, int]] = deque()  # (time, video bytes sent) at recent estimates
        self._opened = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # -- setting up ----------------------------------------------------------------------------

    async def answer(self, sdp: str, config: SessionConfig) -> RTCSessionDescription:
        """Take the client's offer, start the session, return the answer. BadOffer for SDP this
        server can't answer; the pool's LipstreamError if the session can't start. Closes itself
        on any failure."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc's SDP parser raises ValueError, IndexError, KeyError...
                raise BadOffer(f"the offer's SDP can't be used: {public_message(str(exc)) or type(exc).__name__}; "
                               "send what RTCPeerConnection.createOffer() made") from None
            kinds = {t.kind for t in pc.getTransceivers()}
            if not {"audio", "video"} <= kinds:
                raise BadOffer("the offer needs an audio track (the voice, sent and received) and a video one "
                               "(received): addTrack(microphone) and addTransceiver('video', {direction: 'recvonly'})")
            await self._open(config)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            await self.close()
            raise
        self._spawn(self._connect_timeout())
        self._spawn(self._stats_loop())
        return pc.localDescription

    async def _open(self, config: SessionConfig) -> None:
        sessions = self.state.sessions
        sessions[self.key] = self  # the slot is held from here (the caller checked the limit)
        self.handle = await self.state.pool.open(self.key, config, self._deliver)
        info = self.handle.info
        self.preset = get_preset(info["preset"])
        self.stats.renderer = info["renderer"]
        self.state.metrics.sessions.inc()
        self.state.metrics.sessions_total.inc()
        margin_s = info["blockMs"] / 1000 + MARGIN_EXTRA_S
        self.playout = Playout(self.state.clock.now, margin_s)
        self.video = AvatarTrack(self.playout, (info["height"], info["width"]), self.ladder.rung, self._sent)
        self.pc.addTrack(VoiceTrack(self.playout))
        sender = self.pc.addTrack(self.video)
        self._follow_estimates(sender)
        self._opened.set()

    # -- peer connection events ----------------------------------------------------------------

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self._spawn(self._read_audio(track))

    def _on_datachannel(self, channel) -> None:
        self.channel = channel
        if self.handle is not None:
            self._send(p.status_json("started", self.session_id, transport="webrtc", **self.handle.info))

    async def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _connect_timeout(self) -> None:
        timeout_s = self.state.settings.webrtc_connect_timeout_s
        await asyncio.sleep(timeout_s)
        if self.pc.connectionState != "connected":
            log.info("WebRTC peer %s did not connect in %g s; closing", self.key[:8], timeout_s)
            await self.close()

    async def _read_audio(self, track) -> None:
        await self._opened.wait()
        async for chunk in pcm_chunks(track, CHUNK_S):
            if self.closed:
                return
            await self.handle.wait_for_room()
            if self.handle is None or self.handle.closed:
                return
            self.handle.audio(chunk, IN_FORMAT, self.state.clock.now())
            samples = IN_FORMAT.samples(chunk)
            self.stats.audio_quality.add(samples, OUT_RATE_HZ)
            self.stats.audio_ms += len(samples) * 1000 / OUT_RATE_HZ
        if self.handle is not None and not self.closed:
            self.handle.flush()  # the client's track ended: finish its last turn

    # -- the session's events ------------------------------------------------------------------

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, FrameOut):
                if self.playout is not None:
                    underruns = self.playout.underruns
                    if self.playout.place(event) is not None:
                        self.state.metrics.underruns.inc(self.playout.underruns - underruns)
                        self.video.ready.set()
            elif isinstance(event, Status):
                if event.event == "fallback":
                    d = event.detail
                    self.stats.fallbacks += 1
                    self.stats.renderer = d["to_renderer"]
                    self.state.metrics.fallbacks.labels(d["from_renderer"], d["to_renderer"], d["reason"]).inc()
                elif event.event == "switched":
                    self.stats.renderer = event.detail["renderer"]
                if event.event != "flushed":
                    self._send(p.status_json(event.event, self.session_id, **event.detail))
            elif isinstance(event, Dropped):
                if event.reason != "silent":
                    self.stats.dropped[event.reason] += event.count
                    self.state.metrics.dropped.labels(self.preset.name, event.reason).inc(event.count)
            elif isinstance(event, Failure):
                code = p.ERROR_CODES_BY_KIND.get(event.kind, p.INTERNAL)
                self.stats.errors += 1
                self.state.metrics.errors.labels(code).inc()
                self._send(p.error_json(code, public_message(event.message), event.fatal, self.session_id))
                if event.fatal:
                    self._spawn(self.close())

    def _sent(self, placed: Placed) -> None:
        frame = placed.frame
        now = self.state.clock.now()
        latency_s = now - frame.ready_s
        self.stats.sent(latency_s * 1000, frame.idle)
        self.state.metrics.frame_sent(self.preset.name, frame.idle, latency_s)
        if frame.turn_arrived_s is not None:
            self.stats.first_frame((now - frame.turn_arrived_s) * 1000)
            self.state.metrics.first_frame.labels(self.preset.name).observe(now - frame.turn_arrived_s)

    # -- congestion ----------------------------------------------------------------------------

    def _follow_estimates(self, sender) -> None:
        """Read the receiver's estimates (REMB) as they reach the video sender. aiortc hands them
        only to its encoder (as its target bitrate); this wraps the sender's RTCP handler to see
        them too, measures the bitrate sent since the last one, and steps quality."""
        handle_rtcp = sender._handle_rtcp_packet

        async def handle(packet) -> None:
            await handle_rtcp(packet)
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                self._set_encoder_target(sender)  # aiortc just set it to the estimate
                with contextlib.suppress(ValueError):
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                    if sender._ssrc in ssrcs:
                        self.estimate(bitrate, await _bytes_sent(sender), sender)

        sender._handle_rtcp_packet = handle

    def estimate(self, bitrate_bps: int, bytes_sent: int, sender=None) -> list[Step]:
        """A new bandwidth estimate for the video (bit/s), with the video bytes sent so far:
        step quality as the ladder says, and set the encoder's target."""
        now = self.state.clock.now()
        marks = self._sent_marks
        marks.append((now, bytes_sent))
        while len(marks) > 2 and now - marks[1][0] >= SENT_WINDOW_S:
            marks.popleft()
        # over at least SENT_WINDOW_S once there is one (the first estimate has nothing to compare with)
        sent_bps = (bytes_sent - marks[0][1]) * 8 / (now - marks[0][0]) if now > marks[0][0] else 0.0
        steps = self.ladder.update(bitrate_bps, sent_bps, now)
        self._set_encoder_target(sender)
        if steps and self.video is not None:
            self.video.rung = self.ladder.rung
            width, height = self.video.size()
            for step in steps:
                self.state.metrics.quality_steps.labels(step.direction, step.knob).inc()
                self._send(p.status_json("quality", self.session_id, direction=step.direction, step=step.knob,
                                         rung=step.index, width=width, height=height, fps=step.rung.fps,
                                         maxBitrateKbps=step.rung.max_bitrate_bps // 1000,
                                         estimateKbps=int(bitrate_bps) // 1000, sentKbps=int(sent_bps) // 1000))
        return steps

    def _set_encoder_target(self, sender) -> None:
        encoder = getattr(sender, "_RTCRtpSender__encoder", None)  # aiortc keeps it private
        if encoder is not None and hasattr(encoder, "target_bitrate"):
            encoder.target_bitrate = self.ladder.bitrate_bps

    # -- out and down --------------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(STATS_INTERVAL_S)
            rung = self.ladder.rung
            self._send(p.status_json("stats", self.session_id, **self.stats.snapshot(),
                                     quality={"rung": self.ladder.index, "fps": rung.fps, "scale": rung.scale,
                                              "bitrateKbps": self.ladder.bitrate_bps // 1000,
                                              "estimateKbps": (self.ladder.estimate_bps or 0) // 1000,
                                              "sentKbps": (self.ladder.sent_bps or 0) // 1000,
                                              "underruns": self.playout.underruns if self.playout else 0}))

    def _send(self, text: str) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            with contextlib.suppress(Exception):  # the channel may close under us
                channel.send(text)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Free the session and its slot; close the peer connection. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        if self.state.sessions.get(self.key) is self:
            del self.state.sessions[self.key]
            if self.handle is not None:
                self.state.metrics.sessions.dec()
        if self.handle is not None:
            self.handle.close()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self.pc.close()


async def _bytes_sent(sender) -> int:
    """Video bytes the sender has sent (its outbound-rtp stats)."""
    stats = await sender.getStats()
    return sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")
