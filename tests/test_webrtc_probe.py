"""The WebRTC probe's measurements (`lipstream bench webrtc-probe`): flash and tone onsets of a
recording, their pairing, and the sender's timestamps, which must put the audio and the video of
one playout tick at the same NTP time (the one-clock rule on the wire)."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
import pytest

from lipstream.bench.webrtc_probe import logged_sends, onsets, paired_offsets_ms, probe_frame, sender_figures

pytest.importorskip("aiortc", reason="WebRTC needs: pip install 'lipstream[webrtc]'")


def write_pattern(path, audio_late_s: float, seconds: float = 3.0, rate: int = 48000, fps: int = 25) -> None:
    """A Matroska file: a white frame at 0.5 s, 1.5 s, ... (black otherwise) and a tone starting
    `audio_late_s` after each, on their own time lines (as a recorder writes them)."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("mjpeg", rate=fps)
        video.width = video.height = 64
        video.pix_fmt = "yuvj420p"
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for k in range(int(seconds * fps)):
            image = np.full((64, 64, 3), 255 if k % fps == 10 else 0, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        t = np.arange(int(seconds * rate)) / rate
        on = ((t - audio_late_s) % 1.0 >= 0.4) & ((t - audio_late_s) % 1.0 < 0.44) & (t >= 0.4 + audio_late_s)
        samples = np.where(on, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
        pcm = np.round(samples * 32767).astype("<i2")
        for i in range(0, len(pcm), 960):
            chunk = av.AudioFrame.from_ndarray(pcm[None, i : i + 960], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, i, fractions.Fraction(1, rate)
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())


@pytest.mark.parametrize("late_s", [0.0, 0.06])
def test_onsets_of_a_recording_give_its_offset(tmp_path, late_s):
    path = tmp_path / "pattern.mkv"
    write_pattern(path, late_s)
    flashes, tones = onsets(path)
    assert [round(f, 2) for f in flashes] == [0.4, 1.4, 2.4]
    offsets = paired_offsets_ms(flashes, tones)
    assert len(offsets) == 3
    assert np.allclose(offsets, -late_s * 1000, atol=2.0)  # audio late: negative, the evaluator's sign


def test_flashes_without_a_tone_near_them_are_left_out():
    assert paired_offsets_ms([1.0, 2.0, 3.0], [1.05, 2.9]) == [-50.0, 100.0]
    assert paired_offsets_ms([1.0], [1.5]) == []
    assert paired_offsets_ms([1.0], []) == []


def test_the_sender_stamps_audio_and_video_of_one_tick_at_one_time():
    """The server's playout and tracks sent over loopback to an aiortc receiver: every RTCP sender
    report of either stream gives the playout's tick 0 the same NTP time (within the few ms that
    encoding a video frame takes)."""
    from aiortc import RTCPeerConnection

    from lipstream.server.webrtc.playout import Playout
    from lipstream.server.webrtc.quality import QualityLadder
    from lipstream.server.webrtc.tracks import AvatarTrack, VoiceTrack

    async def talk():
        log = []
        playout = Playout(time.monotonic, 0.1)
        video = AvatarTrack(playout, (128, 128), QualityLadder().rung)
        sender, receiver = RTCPeerConnection(), RTCPeerConnection()
        receiver.addTransceiver("audio", direction="recvonly")
        receiver.addTransceiver("video", direction="recvonly")
        with logged_sends(log):
            await receiver.setLocalDescription(await receiver.createOffer())
            await sender.setRemoteDescription(receiver.localDescription)
            audio_sender, video_sender = sender.addTrack(VoiceTrack(playout)), sender.addTrack(video)
            await sender.setLocalDescription(await sender.createAnswer())
            await receiver.setRemoteDescription(sender.localDescription)
            while playout.start_s is None:
                await asyncio.sleep(0.01)
            first_tick, start = None, time.monotonic()
            for k in range(125):  # 5 s of frames in real time, as a session delivers them
                await asyncio.sleep(max(0.0, start + k / 25 - time.monotonic()))
                placed = playout.place(probe_frame(k))
                first_tick = placed.tick if first_tick is None else first_tick
                video.ready.set()
            await asyncio.sleep(0.3)
        await sender.close()
        await receiver.close()
        return sender_figures(log, {"audio": (audio_sender._ssrc, 48000, 0),
                                    "video": (video_sender._ssrc, 90000, first_tick)}, playout.start_s)

    figures = asyncio.run(asyncio.wait_for(talk(), 60))
    assert figures["audio"]["sender_reports"] >= 2 and figures["video"]["sender_reports"] >= 2
    # a report's NTP time is when its packet left: a busy machine delays both streams' sends alike,
    # and the playout's margin (100 ms here) is what a stream started off the one clock would show
    assert abs(figures["video_minus_audio_ms"]) <= 40, figures
    assert len(figures["audio"]["first_packets_sent_late_ms"]) == len(figures["video"]["first_packets_sent_late_ms"]) == 5
