"""`lipstream bench webrtc-probe`: how in sync the WebRTC path is by itself, without a face or
the evaluator. The server's own playout and tracks (`server/webrtc`) send a test pattern to
headless Chromium: every second one frame is white and its audio a 1 kHz tone, the rest black
and silent, both on the playout's one timeline. The page plays the stream in a <video> element,
records it with two MediaRecorders at once (PCM audio in the WebM, and Opus) and reads its
receive statistics; the recording's flash onsets (video frame times) are compared with its tone
onsets (audio sample times). Also measured on the sender: from every RTCP sender report, the
time (NTP) it gives to the playout's tick 0 for the audio and for the video stream (equal when
both are stamped from one clock), and how late the first packets left after they were due.

Needs Chromium (Debian's /usr/bin/chromium) and Playwright's Python package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lipstream.bench.machine import machine_info
from lipstream.errors import NotSupportedError

SIZE_PX = 128
FPS = 25
FLASH_PERIOD_FRAMES = 25  # one white frame with a tone per second
TONE_HZ = 1000.0
MARGIN_S = 0.1  # the playout's margin (a session's is its block + 80 ms)
SETTLE_S = 3.0  # played before recording, as the page bench's warm-up
RECORDERS = {"pcm": "video/webm;codecs=vp8,pcm", "opus": "video/webm;codecs=vp8,opus"}
RTP_WRAP = 1 << 32

PAGE = '<video id="v" autoplay playsinline></video>'
OFFER_JS = """async jitterTargetMs => {
  const pc = window.pc = new RTCPeerConnection();
  pc.addTransceiver("audio", {direction: "recvonly"});
  pc.addTransceiver("video", {direction: "recvonly"});
  const received = window.received = new MediaStream();
  pc.ontrack = ev => {
    if (jitterTargetMs) ev.receiver.jitterBufferTarget = jitterTargetMs;  // both tracks held at least this long
    received.addTrack(ev.track); document.getElementById("v").srcObject = received;
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 3000);
  });
  return pc.localDescription.sdp;
}"""
RECORD_JS = """([mimes, ms]) => Promise.all(mimes.map(mime => new Promise((resolve, reject) => {
  const rec = new MediaRecorder(window.received, { mimeType: mime }), parts = [];
  rec.ondataavailable = ev => ev.data.size && parts.push(ev.data);
  rec.onerror = ev => reject(ev.error);
  rec.onstop = async () => {
    const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
    let text = ""; for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    resolve(btoa(text));
  };
  rec.start(1000);
  setTimeout(() => rec.stop(), ms);
})))"""
STATS_JS = """async () => {
  const out = {};
  for (const s of (await window.pc.getStats()).values())
    if (s.type === "inbound-rtp") {
      const n = Math.max(1, s.jitterBufferEmittedCount);
      out[s.kind] = { jitterBufferMs: 1000 * s.jitterBufferDelay / n,
                      jitterBufferMinimumMs: 1000 * (s.jitterBufferMinimumDelay || 0) / n,
                      playoutNtpMs: s.estimatedPlayoutTimestamp };
    }
  return out;
}"""


def probe_frame(k: int):
    """Test-pattern frame k: white with a tone every FLASH_PERIOD_FRAMES frames, else black and
    silent; raw RGB (SIZE_PX square) and PCM16 mono at the playout's rate, as a session makes."""
    from lipstream.server.webrtc.playout import OUT_RATE_HZ
    from lipstream.stream.events import FrameOut

    flash = k % FLASH_PERIOD_FRAMES == FLASH_PERIOD_FRAMES // 5
    samples = OUT_RATE_HZ // FPS
    image = np.full((SIZE_PX, SIZE_PX, 3), 255 if flash else 0, np.uint8)
    tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / OUT_RATE_HZ) if flash else np.zeros(samples)
    now = time.monotonic()
    return FrameOut(index=k, pts=k * 640, span=640, data=image.tobytes(), keyframe=False, idle=False,
                    ready_s=now, deadline_s=now + 1.0, renderer="probe", mouth=np.zeros(4, np.float32),
                    audio=np.round(tone * 32767).astype("<i2").tobytes(), sample_rate=OUT_RATE_HZ, channels=1)


@contextlib.contextmanager
def logged_sends(log: list[tuple]):
    """Record what aiortc sends while inside: ("rtp", monotonic s, ssrc, rtp ts) per RTP packet and
    ("sr", monotonic s, ssrc, NTP s, rtp ts) per RTCP sender report (before encryption)."""
    from aiortc import rtcdtlstransport
    from aiortc.clock import datetime_from_ntp
    from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket, is_rtcp

    send = rtcdtlstransport.RTCDtlsTransport._send_rtp

    async def logging_send(self, data: bytes) -> None:
        now = time.monotonic()
        if is_rtcp(data):
            for packet in RtcpPacket.parse(data):
                if isinstance(packet, RtcpSrPacket):
                    info = packet.sender_info
                    log.append(("sr", now, packet.ssrc, datetime_from_ntp(info.ntp_timestamp).timestamp(),
                                info.rtp_timestamp))
        else:
            packet = RtpPacket.parse(data)
            log.append(("rtp", now, packet.ssrc, packet.timestamp))
        await send(self, data)

    rtcdtlstransport.RTCDtlsTransport._send_rtp = logging_send
    try:
        yield log
    finally:
        rtcdtlstransport.RTCDtlsTransport._send_rtp = send


def sender_figures(log: list[tuple], streams: dict[str, tuple[int, int, int]], start_s: float) -> dict:
    """From `logged_sends`: per stream ("audio", "video": (ssrc, clock rate, playout tick of its
    first packet)), the NTP time (s) each sender report gives tick 0 of the playout, and how late
    (ms) the first packets were sent after they were due (`start_s` + tick / 48000)."""
    from lipstream.server.webrtc.playout import OUT_RATE_HZ

    out: dict = {}
    for kind, (ssrc, rate, first_tick) in streams.items():
        packets = [e for e in log if e[0] == "rtp" and e[2] == ssrc]
        if not packets:
            continue
        origin = (packets[0][3] - first_tick * rate // OUT_RATE_HZ) % RTP_WRAP  # the RTP ts of tick 0

        def tick(rtp_ts: int, origin=origin, rate=rate) -> float:
            return ((rtp_ts - origin) % RTP_WRAP) * OUT_RATE_HZ / rate

        firsts, last_ts = [], None
        for _, sent, _, ts in packets:
            if ts != last_ts:  # a frame's first packet
                firsts.append(round((sent - start_s - tick(ts) / OUT_RATE_HZ) * 1000, 1))
                last_ts = ts
            if len(firsts) == 5:
                break
        out[kind] = {"ssrc": ssrc, "first_packets_sent_late_ms": firsts,
                     "tick0_ntp_s": [ntp - tick(ts) / OUT_RATE_HZ for e in log if e[0] == "sr" and e[2] == ssrc
                                     for _, _, _, ntp, ts in [e]]}
    if "audio" in out and "video" in out and out["audio"]["tick0_ntp_s"] and out["video"]["tick0_ntp_s"]:
        audio, video = np.median(out["audio"]["tick0_ntp_s"]), np.median(out["video"]["tick0_ntp_s"])
        out["video_minus_audio_ms"] = round(float(video - audio) * 1000, 1)
    for kind in ("audio", "video"):
        if kind in out:
            t0 = np.asarray(out[kind].pop("tick0_ntp_s"))
            out[kind]["sender_reports"] = len(t0)
            out[kind]["tick0_spread_ms"] = round(float(np.ptp(t0)) * 1000, 1) if len(t0) else None
    return out


def onsets(path: Path) -> tuple[list[float], list[float]]:
    """A recording's flash onsets (s: first white frame's time) and tone onsets (s: first sample
    whose 1 ms mean level passes 0.1), on the recording's own time line."""
    import av

    with av.open(str(path)) as container:
        frames = [(float(f.pts * f.time_base), float(f.to_ndarray(format="gray").mean()))
                  for f in container.decode(video=0) if f.pts is not None]
    with av.open(str(path)) as container:
        chunks = []
        for f in container.decode(audio=0):
            samples = f.to_ndarray()
            if samples.dtype.kind == "i":
                samples = samples / np.iinfo(samples.dtype).max
            channels = samples.reshape(len(f.layout.channels), -1) if f.format.is_planar else samples.reshape(-1, len(f.layout.channels)).T
            chunks.append((float(f.pts * f.time_base), f.sample_rate, np.abs(channels).mean(axis=0)))
    flashes = [t for (t, level), (_, before) in zip(frames[1:], frames[:-1]) if level > 128 >= before]
    tones: list[float] = []
    if chunks:
        # one signal, each audio frame at its own pts (a recorder may leave small gaps between them)
        first, rate = chunks[0][0], chunks[0][1]
        signal = np.zeros(round((chunks[-1][0] - first) * rate) + len(chunks[-1][2]))
        for start, _, samples in chunks:
            at = round((start - first) * rate)
            signal[at : at + len(samples)] = samples[: len(signal) - at]
        level = np.convolve(signal, np.ones(rate // 1000) / (rate // 1000), "same")
        for i in np.flatnonzero((level[1:] > 0.1) & (level[:-1] <= 0.1)) + 1:
            t = first + i / rate
            if not tones or t - tones[-1] > 0.5:
                tones.append(t)
    return flashes, tones


def paired_offsets_ms(flashes: list[float], tones: list[float], within_s: float = 0.4) -> list[float]:
    """Each flash's time minus its nearest tone's, in ms (evaluator's sign: < 0 means the audio is
    late); flashes with no tone within `within_s` are left out."""
    out = []
    for flash in flashes:
        nearest = min(tones, key=lambda t: abs(t - flash), default=None)
        if nearest is not None and abs(nearest - flash) <= within_s:
            out.append(round((flash - nearest) * 1000, 1))
    return out


async def _probe(seconds: float, jitter_target_ms: int | None) -> dict:
    """One connection: settle, then one recording per RECORDERS entry, all at once; figures for each."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from playwright.async_api import async_playwright

    from lipstream.server.webrtc.playout import Playout
    from lipstream.server.webrtc.quality import QualityLadder
    from lipstream.server.webrtc.tracks import AvatarTrack, VoiceTrack

    log: list[tuple] = []
    playout = Playout(time.monotonic, MARGIN_S)
    video = AvatarTrack(playout, (SIZE_PX, SIZE_PX), QualityLadder().rung)
    pc = RTCPeerConnection()
    first_video_tick: list[int] = []
    results: dict = {}
    with logged_sends(log), tempfile.TemporaryDirectory() as tmp:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                               args=["--no-sandbox", "--disable-gpu",
                                                     "--autoplay-policy=no-user-gesture-required"])
            try:
                page = await browser.new_page()
                await page.set_content(PAGE)
                await pc.setRemoteDescription(RTCSessionDescription(await page.evaluate(OFFER_JS, jitter_target_ms), "offer"))
                audio_sender, video_sender = pc.addTrack(VoiceTrack(playout)), pc.addTrack(video)
                await pc.setLocalDescription(await pc.createAnswer())
                await page.evaluate("sdp => window.pc.setRemoteDescription({type: 'answer', sdp})",
                                    pc.localDescription.sdp)
                while playout.start_s is None:
                    await asyncio.sleep(0.01)
                producer = asyncio.ensure_future(_produce(playout, video, first_video_tick))
                try:
                    await asyncio.sleep(SETTLE_S)
                    recordings = await page.evaluate(RECORD_JS, [list(RECORDERS.values()), round(seconds * 1000)])
                    stats = await page.evaluate(STATS_JS)
                    for (name, mime), recording in zip(RECORDERS.items(), recordings):
                        path = Path(tmp) / f"{name}.webm"
                        path.write_bytes(base64.b64decode(recording))
                        offsets = paired_offsets_ms(*onsets(path))
                        results[name] = {"mime": mime, "offsets_ms": offsets,
                                         "offset_ms_median": round(float(np.median(offsets)), 1) if offsets else None}
                    results["jitter_buffer_ms"] = {k: round(v["jitterBufferMs"], 1) for k, v in stats.items()}
                    results["jitter_buffer_minimum_ms"] = {k: round(v["jitterBufferMinimumMs"], 1) for k, v in stats.items()}
                    results["playout_video_minus_audio_ms"] = _playout_difference(stats)
                finally:
                    producer.cancel()
            finally:
                await browser.close()
                await pc.close()
    streams = {"audio": (audio_sender._ssrc, 48000, 0), "video": (video_sender._ssrc, 90000, first_video_tick[0])}
    return {"recordings": results, "sender": sender_figures(log, streams, playout.start_s)}


async def _produce(playout, video, first_tick: list[int]) -> None:
    """Frames in real time from the playout's start, as a session delivers them."""
    start = time.monotonic()
    k = 0
    while True:
        await asyncio.sleep(max(0.0, start + k / FPS - time.monotonic()))
        placed = playout.place(probe_frame(k))
        if placed is not None:
            if not first_tick:
                first_tick.append(placed.tick)
            video.ready.set()
        k += 1


def _playout_difference(stats: dict) -> float | None:
    video, audio = stats.get("video", {}).get("playoutNtpMs"), stats.get("audio", {}).get("playoutNtpMs")
    return None if video is None or audio is None else round(video - audio, 1)


def run_webrtc_probe(out: Path, seconds: float = 10.0, jitter_target_ms: int | None = None) -> dict:
    """Run the probe (module docstring) and write its JSON to `out`; `jitter_target_ms`: the page
    asks its receivers to hold both tracks at least this long (`RTCRtpReceiver.jitterBufferTarget`)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise NotSupportedError("the WebRTC probe drives Chromium with Playwright: pip install playwright") from None
    if not Path("/usr/bin/chromium").exists():
        raise NotSupportedError("the WebRTC probe needs Debian's chromium: apt-get install chromium")
    load_before = [round(x, 2) for x in os.getloadavg()]
    figures = asyncio.run(_probe(seconds, jitter_target_ms))
    results = {"machine": machine_info(),
               "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
               "seconds_per_recording": seconds, "settle_s": SETTLE_S,
               "jitter_target_ms": jitter_target_ms, **figures}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results
