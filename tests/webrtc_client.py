"""An in-process aiortc client of POST /webrtc/offer: sends a WAV as its microphone, records
the avatar and voice it receives (arrival times) and the data channel's messages."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError


class OfferClient:
    """One peer: `await connect(server, ...)`, then read `video`, `audio`, `messages`; `close()`."""

    def __init__(self, wav: Path | None = None):
        self.pc = RTCPeerConnection()
        self.player = MediaPlayer(str(wav)) if wav is not None else None
        self.video: list[tuple[float, np.ndarray]] = []  # (arrival s, RGB)
        self.audio: list[tuple[float, np.ndarray, int]] = []  # (arrival s, int16 mono, rate)
        self.messages: list[dict] = []
        self.response: httpx.Response | None = None
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._record(track))))

    async def offer(self) -> str:
        """The offer's SDP: the WAV as sendrecv audio, video received only, a data channel."""
        if self.player is not None:
            self.pc.addTrack(self.player.audio)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        channel = self.pc.createDataChannel("lipstream")
        channel.on("message", lambda m: self.messages.append(json.loads(m)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(self, http: str, headers: dict | None = None, **body) -> httpx.Response:
        """POST the offer (body: avatar, preset, width, ...); on 200 the answer is applied."""
        sdp = await self.offer()
        async with httpx.AsyncClient(timeout=60) as client:
            self.response = await client.post(f"{http}/webrtc/offer", headers=headers or {},
                                              json={"sdp": sdp, "type": "offer", **body})
        if self.response.status_code == 200:
            await self.pc.setRemoteDescription(RTCSessionDescription(**self.response.json()))
        return self.response

    async def _record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                self.video.append((now, frame.to_ndarray(format="rgb24")))
            else:
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.audio.append((now, samples.astype(np.int16), frame.sample_rate))

    async def send_estimate(self, bitrate_bps: int) -> None:
        """Tell the server's video sender that the link carries `bitrate_bps` (an RTCP REMB, as
        the receiver's estimator sends them): a congested link, as far as the server can tell."""
        from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")
        ssrcs = [s.ssrc for s in (await receiver.getStats()).values() if s.type == "inbound-rtp"]
        if ssrcs:
            await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                                                     fci=pack_remb_fci(bitrate_bps, ssrcs)))

    def events(self, name: str) -> list[dict]:
        return [m for m in self.messages if m.get("event") == name]

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
