"""Opus over the WebSocket: raw packets encoded here with PyAV's libopus, decoded by the server
per session; data that isn't Opus gets AUDIO_PROCESSING_FAILED and the session goes on."""

import asyncio
import base64
import json
import struct
import time

import av
import numpy as np
import pytest
import websockets

from live_server import start_server, stop_server
from lipstream.audio.opus import OPUS_RATE_HZ, OpusDecoder
from lipstream.errors import BadAudioError
from lipstream.server import protocol as p

PACKET_S = 0.02


def opus_packets(samples: np.ndarray, rate: int) -> list[bytes]:
    """float32 mono (n,) audio at `rate` -> raw Opus packets of 20 ms (libopus at 48 kHz, 32 kbit/s)."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE_HZ)
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = OPUS_RATE_HZ, "mono", "s16"
    encoder.bit_rate = 32000
    encoder.options = {"frame_duration": "20", "application": "voip"}
    fifo = av.AudioFifo()
    for resampled in resampler.resample(frame) + resampler.resample(None):
        fifo.write(resampled)
    packets = []
    while (chunk := fifo.read(960)) is not None:
        packets += [bytes(packet) for packet in encoder.encode(chunk)]
    return packets + [bytes(packet) for packet in encoder.encode(None)]


def tone(seconds: float, hz: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_the_decoder_gives_back_the_encoded_sound():
    packets = opus_packets(tone(1.0, 440.0), 16000)
    decoder = OpusDecoder(1)
    out = np.concatenate([decoder.decode(packet) for packet in packets])
    assert out.dtype == np.float32 and out.shape[1] == 1
    assert abs(len(out) - OPUS_RATE_HZ) <= 2 * 960  # a second (plus the encoder's look-ahead)
    spectrum = np.abs(np.fft.rfft(out[4800:43200, 0]))
    assert abs(np.argmax(spectrum) * OPUS_RATE_HZ / 38400 - 440.0) < 5
    assert 0.2 < np.abs(out[4800:]).max() < 0.6


def test_what_is_not_opus_is_refused_and_the_stream_goes_on():
    packets = opus_packets(tone(0.2, 300.0), 16000)
    decoder = OpusDecoder(2)  # mono packets decode to two channels too
    assert decoder.decode(packets[0]).shape[1] == 2
    for bad in (b"", b"\xff\xff\xff", b"\x03\xff\xff\xff"):
        with pytest.raises(BadAudioError, match="Opus"):
            decoder.decode(bad)
    assert len(decoder.decode(packets[1])) == 960  # a fresh decoder after the bad data
    with pytest.raises(BadAudioError, match="1 or 2 channels"):
        OpusDecoder(6)


def test_binary_and_json_audio_name_opus():
    packet = b"\x78\x01\x02"
    message = p.parse_binary(p.AUDIO_IN.pack(p.KIND_AUDIO_IN, 3, 1, 48000, 5) + packet)
    assert message.fmt.encoding == "opus" and message.data == packet and message.sequence == 5
    text = json.dumps({"type": "audio", "format": "opus", "data": base64.b64encode(packet).decode()})
    assert p.parse_text(text).fmt.encoding == "opus"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("opus"), max_sessions=2)
    yield s
    stop_server(s)


def test_a_client_streams_opus_in_real_time(server, speech):
    packets = opus_packets(speech[: 3 * 16000], 16000)

    async def session():
        messages = []
        async with websockets.connect(server.ws, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "preset": "ultra_low", "renderer": "warp", "width": 128,
                                      "audioFormat": "opus", "returnAudio": True, "idleFrames": False,
                                      "framing": "binary"}))
            t0 = time.monotonic()
            for n, packet in enumerate(packets):
                await asyncio.sleep(max(0.0, t0 + n * PACKET_S - time.monotonic()))
                if n == len(packets) // 2:  # something that isn't Opus, mid-stream
                    await ws.send(p.AUDIO_IN.pack(p.KIND_AUDIO_IN, 3, 1, 48000, 0) + b"\x03\xff\xff\xff")
                await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(packet).decode()}))
            await ws.send(json.dumps({"type": "end"}))
            async for raw in ws:
                messages.append(json.loads(raw) if isinstance(raw, str) else raw)
        return messages

    messages = asyncio.run(asyncio.wait_for(session(), 60))
    errors = [m for m in messages if isinstance(m, dict) and m["type"] == "error"]
    assert [e["code"] for e in errors] == ["AUDIO_PROCESSING_FAILED"] and not errors[0]["fatal"]
    assert "Opus" in errors[0]["message"]
    frames = [m for m in messages if isinstance(m, bytes) and m[0] == p.KIND_FRAME_OUT]
    echoed = [m for m in messages if isinstance(m, bytes) and m[0] == p.KIND_AUDIO_OUT]
    ended = next(m for m in messages if isinstance(m, dict) and m.get("event") == "ended")
    # the echo is the decoded audio: 48 kHz mono, as long as the packets
    _, _, channels, rate, _ = p.AUDIO_OUT.unpack_from(echoed[0])
    assert (rate, channels) == (OPUS_RATE_HZ, 1)
    pcm = np.concatenate([np.frombuffer(m[p.AUDIO_OUT.size :], "<i2") for m in echoed])
    assert abs(len(pcm) - len(packets) * 960) <= 960
    assert ended["stats"]["audioQuality"]["sampleRate"] == OPUS_RATE_HZ
    # every frame of that audio is made (none skipped: the session has no idle frames but makes silence)
    indices = [struct.unpack_from("<I", m, 8)[0] for m in frames]
    assert len(frames) + ended["stats"]["framesDropped"] + ended["stats"]["silentFramesSkipped"] >= \
        len(packets) * PACKET_S * 25 - 1
    assert indices == sorted(indices)


def test_a_seed_002_client_sends_opus(server, speech):
    packet_groups = opus_packets(speech[:16000], 16000)

    async def session():
        async with websockets.connect(server.ws, max_size=None) as ws:
            for n, packet in enumerate(packet_groups):
                await ws.send(json.dumps({"type": "lipsync_audio", "sessionId": "opus-seed", "audioChunk": {
                    "data": base64.b64encode(packet).decode(), "timestamp": 0, "sequenceNumber": n,
                    "sampleRate": 16000, "channels": 1, "format": "opus"}, "faceModelId": "default"}))
            await ws.send(json.dumps({"type": "end"}))
            return [json.loads(raw) async for raw in ws]

    messages = asyncio.run(asyncio.wait_for(session(), 60))
    assert not [m for m in messages if m["type"] == "error"]
    video = [m for m in messages if m["type"] == "response_video"]
    stats = next(m for m in messages if m.get("event") == "ended")["stats"]
    assert video and all(m["sessionId"] == "opus-seed" for m in video)
    assert len(video) + stats["framesDropped"] >= 24  # a second of audio, sent at once: some may be late
