"""A real server (uvicorn on 127.0.0.1, worker processes) driven by real WebSocket and HTTP clients."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import wave

import av
import cv2
import httpx
import numpy as np
import pytest
import websockets

from conftest import espeak
from live_server import start_server, stop_server
from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.server import protocol as p

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("server"), max_sessions=3, token=TOKEN, idle_timeout_s=4.0,
                     max_upload_bytes=4 * 2**20)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> tuple[np.ndarray, int]:
    """espeak-ng speech as it comes: int16 mono at its own rate (22.05 kHz)."""
    path = espeak("hello there, this is a test of real time lip sync", tmp_path_factory.mktemp("voice") / "v.wav")
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def collect(ws, until=lambda m: False) -> list:
    """Messages (JSON decoded, binary kept) until `until(message)` or the server closes."""
    out = []
    try:
        async for raw in ws:
            msg = json.loads(raw) if isinstance(raw, str) else raw
            out.append(msg)
            if until(msg):
                break
    except websockets.ConnectionClosed:
        pass
    return out


async def send_real_time(ws, chunks, chunk_s: float, make) -> float:
    """Send chunks paced from a start time (chunk n at t0 + n * chunk_s), as a live source would;
    returns the longest gap between two sends (s): a loaded test machine may stall the sender."""
    t0 = last = time.monotonic()
    longest = 0.0
    for n, chunk in enumerate(chunks):
        await asyncio.sleep(max(0.0, t0 + n * chunk_s - time.monotonic()))
        await ws.send(make(n, chunk))
        longest, last = max(longest, time.monotonic() - last), time.monotonic()
    return longest


def test_seed_002_client_streaming_real_time(server, voice):
    """A client written from seed 002 alone: lipsync_audio in, response_video out, nothing else."""
    samples, rate = voice
    step = rate // 50  # 20 ms chunks
    chunks = [samples[i : i + step] for i in range(0, len(samples), step)]

    def lipsync_audio(n, chunk):
        return json.dumps({
            "type": "lipsync_audio", "sessionId": "session-123", "userId": "user-456",
            "audioChunk": {"data": base64.b64encode(chunk.tobytes()).decode(), "timestamp": 1705312200000 + 20 * n,
                           "sequenceNumber": n, "sampleRate": rate, "channels": 1, "format": "pcm"},
            "faceModelId": "default", "modelPreference": "tpsm"})

    audio_ms = len(samples) / rate * 1000

    def last_turn_ended(m):
        return isinstance(m, dict) and m.get("event") == "turn_ended" and m["audioMs"] >= audio_ms - 1

    async def session():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            # read while sending, as a live client does (one that reads nothing for seconds is a
            # slow link to the server: it steps quality down and drops what goes stale)
            reader = asyncio.create_task(collect(ws, last_turn_ended))
            stall = await send_real_time(ws, chunks, 0.02, lipsync_audio)
            # no flush, no end: the turn ends by itself when the audio stops coming
            return stall, await reader

    stall, messages = run(session())
    errors = [m for m in messages if m["type"] == "error"]
    assert not errors
    video = [m for m in messages if m["type"] == "response_video"]
    speech = [m for m in video if not m["idle"]]
    assert speech == video  # no idle frames: it did not ask for them
    ended = [m for m in messages if m.get("event") == "turn_ended"]
    # one turn, unless the sender itself stalled past the end-of-turn grace (a loaded test machine);
    # then the next turn starts on the next frame boundary
    assert len(ended) == 1 or stall > 0.25, (stall, ended)
    n_frames = FrameClock(25).frame_count(round(ended[-1]["audioMs"] * SAMPLE_RATE / 1000))
    if len(ended) == 1:
        assert n_frames == FrameClock(25).frame_count(round(len(samples) * SAMPLE_RATE / rate))
    indices = [m["frameIndex"] for m in speech]
    # every frame is on the clock; on a busy machine a few may have been dropped as late, not sent late
    assert indices == sorted(set(indices)) and indices[-1] == n_frames - 1, indices
    assert len(indices) >= 0.9 * n_frames, f"{n_frames - len(indices)} of {n_frames} frames dropped"
    assert all(m["audioTimestamp"] == 40 * m["frameIndex"] and m["pts"] == 640 * m["frameIndex"] for m in speech)
    assert [m["sequenceNumber"] for m in video] == list(range(len(video)))
    turns = [f"turn-{n:03d}" for n in range(1, len(ended) + 1)]
    assert all(m["sessionId"] == "session-123" and m["turnId"] in turns and m["format"] == "jpeg" for m in speech)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(speech[10]["frameData"]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (512, 512, 3) and image.std() > 10
    notice = [m for m in messages if m.get("event") == "notice"]
    assert "tpsm" in notice[0]["message"]


def test_binary_framing_h264_any_rate_and_clean_end(server, voice):
    """Production framing: 48 kHz stereo float32 chunks of 10 ms to 1 s, H.264 frames out."""
    samples, rate = voice
    mono = samples.astype(np.float32) / 32768
    stereo48 = np.repeat(np.interp(np.arange(int(len(mono) * 48000 / rate)) * rate / 48000, np.arange(len(mono)),
                                   mono)[:, None], 2, axis=1).astype("<f4")
    sizes = [480, 48000, 960, 4800, 24000, 2400] * 20
    chunks, i = [], 0
    for n in sizes:
        if i >= len(stereo48):
            break
        chunks.append(stereo48[i : i + n])
        i += n

    async def session():
        async with websockets.connect(f"{server.ws}?token={TOKEN}") as ws:
            await ws.send(json.dumps({"type": "start", "preset": "balanced", "format": "h264", "width": 256,
                                      "framing": "binary", "returnAudio": True}))
            started = json.loads(await ws.recv())
            assert started["event"] == "started" and (started["width"], started["height"]) == (256, 256)
            reader = asyncio.create_task(collect(ws))  # read while sending, as a live client does
            for n, chunk in enumerate(chunks):
                await ws.send(p.AUDIO_IN.pack(p.KIND_AUDIO_IN, 2, 2, 48000, n) + chunk.tobytes())
                await asyncio.sleep(len(chunk) / 48000)
            await ws.send(json.dumps({"type": "end"}))
            return started, await reader

    started, messages = run(session())
    frames = [m for m in messages if isinstance(m, bytes) and m[0] == p.KIND_FRAME_OUT]
    echoed = [m for m in messages if isinstance(m, bytes) and m[0] == p.KIND_AUDIO_OUT]
    ended = [m for m in messages if isinstance(m, dict) and m.get("event") == "ended"][0]
    headers = [p.FRAME_OUT.unpack_from(f) for f in frames]
    speech = [h for h in headers if not h[2] & p.FLAG_IDLE]
    # the echo is the audio as sent (48 kHz stereo, as PCM16), stamped on the server's clock
    assert {struct.unpack_from("<BBHIQ", m)[2:4] for m in echoed} == {(2, 48000)}
    back = np.frombuffer(b"".join(m[p.AUDIO_OUT.size :] for m in echoed), "<i2").reshape(-1, 2)
    assert len(back) == len(stereo48) and np.abs(back / 32767 - stereo48).max() < 1e-4
    expected = FrameClock(25, 48000).frame_count(len(stereo48))
    indices = [h[5] for h in speech]
    dropped = ended["stats"]["framesDropped"]  # on a busy machine a few may miss their deadline
    thinned = ended["stats"]["framesThinned"]  # or be left out for a client that reads slowly (adaptive quality)
    assert indices == sorted(set(indices)) and len(indices) + dropped + thinned == expected
    assert dropped <= 5 and indices[-1] == expected - 1
    assert all(h[6] == FrameClock(25).frame_start(h[5]) for h in speech)  # pts from samples only
    codec = av.CodecContext.create("h264", "r")
    decoded = [f for m in frames for f in codec.decode(av.Packet(m[p.FRAME_OUT.size :]))] + codec.decode(None)
    assert len(decoded) == len(frames) and decoded[0].width == 256
    assert ended["stats"]["framesSent"] == len(frames)


def test_hostile_and_malformed_messages(server):
    async def session():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            for bad in ["{", "[]", '{"type":"start","avatar":"../../../etc/passwd"}', '{"type":"audio","data":"AAAA"}',
                        b"\x01\x02garbage", '{"type":"flush"}', '{"type":"start","width":"x"}']:
                await ws.send(bad)
            answers = [json.loads(await ws.recv()) for _ in range(7)]
            await ws.send('{"type":"ping","id":7}')
            pong = json.loads(await ws.recv())
            for _ in range(30):  # a flood of junk gets the connection closed
                await ws.send("junk")
            rest = await collect(ws)
            return answers, pong, rest, ws.close_code

    answers, pong, rest, close_code = run(session())
    assert [a["type"] for a in answers] == ["error"] * 7 and not any(a["fatal"] for a in answers)
    assert answers[2]["code"] == p.FACE_MODEL_NOT_FOUND and answers[5]["code"] == p.NO_SESSION
    assert pong == {"type": "pong", "id": 7}
    assert rest[-1]["fatal"] and close_code == 1008
    assert httpx.get(f"{server.http}/health").json()["status"] == "ok"


def test_oversized_message_is_refused(server):
    async def session():
        async with websockets.connect(server.ws, additional_headers=AUTH, max_size=None) as ws:
            await ws.send(b"\x01" * (p.MAX_MESSAGE_BYTES + 10))
            await collect(ws)
            return ws.close_code

    assert run(session()) == 1009


def test_token_is_required(server):
    async def session():
        async with websockets.connect(server.ws) as ws:
            return await collect(ws), ws.close_code

    messages, code = run(session())
    assert messages[0]["code"] == p.UNAUTHORIZED and code == 1008
    assert httpx.get(f"{server.http}/api/avatars").status_code == 401
    assert httpx.get(f"{server.http}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.http}/health").status_code == 200


def test_session_limit_and_idle_timeout(server):
    async def session():
        clients = [await websockets.connect(server.ws, additional_headers=AUTH) for _ in range(4)]
        for ws in clients[:3]:
            await ws.send('{"type":"start","width":128,"idleFrames":false}')
            assert json.loads(await ws.recv())["event"] == "started"
        health = httpx.get(f"{server.http}/health").json()
        await clients[3].send('{"type":"start"}')
        refused = await collect(clients[3])
        timed_out = await collect(clients[0], lambda m: m["type"] == "error")  # 4 s without a message
        for ws in clients:
            await ws.close()
        return health, refused, clients[3].close_code, timed_out

    health, refused, code, timed_out = run(session())
    assert health["sessions"] == 3 and health["workers"]["alive"] == 2
    assert refused[-1]["code"] == p.SESSION_LIMIT and code == 1013
    assert timed_out[-1]["code"] == p.TIMEOUT


def test_switch_renderer_mid_session(server, voice):
    samples, rate = voice
    half = len(samples) // 2

    async def session():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "preset": "ultra_low", "width": 128, "sampleRate": rate}))
            await ws.recv()
            for part in (samples[:half], samples[half:]):
                for i in range(0, len(part), rate // 10):
                    data = base64.b64encode(part[i : i + rate // 10]).decode()
                    await ws.send(json.dumps({"type": "audio", "data": data}))
                await ws.send(json.dumps({"type": "switch", "renderer": "bank"}))  # not for a photo
                await ws.send(json.dumps({"type": "switch", "renderer": "static"}))
            await ws.send('{"type":"end"}')
            return await collect(ws)

    messages = run(session())
    errors = [m for m in messages if m["type"] == "error"]
    switched = [m for m in messages if m.get("event") == "switched"]
    assert errors and errors[0]["code"] == p.UNSUPPORTED and not errors[0]["fatal"]
    assert switched and switched[0]["renderer"] == "static"
    assert messages[-1]["event"] == "ended" and messages[-1]["stats"]["renderer"] == "static"


def test_http_api_upload_render_metrics(server, voice, portrait_path, tmp_path):
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    too_big = api.post("/api/avatars", files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + bytes(5 * 2**20))},
                       data={"name": "big"})
    assert too_big.status_code == 413
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n\x89PNG\r\n\x1a\n'
    streamed = api.post("/api/avatars", content=iter([head] + [bytes(2**20)] * 5),  # chunked: no Content-Length
                        headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413
    assert api.post("/api/avatars", files={"file": ("a.txt", b"hello")}, data={"name": "x"}).status_code == 415
    assert api.post("/api/avatars", files={"file": ("a.png", portrait_path.read_bytes())},
                    data={"name": "../evil"}).status_code == 400
    job = api.post("/api/avatars", files={"file": ("me.png", portrait_path.read_bytes())}, data={"name": "ann"}).json()
    samples, rate = voice
    wav = tmp_path / "v.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(samples.tobytes())
    render = api.post("/api/render", files={"audio": ("v.wav", wav.read_bytes())},
                      data={"avatar": "default", "renderer": "static", "driver": "energy"}).json()
    no_video = api.get(f"/api/jobs/{job['id']}/result")  # a prepare job has no video to download
    assert no_video.status_code == 409 and "no video" in no_video.json()["detail"]
    assert api.get("/api/jobs/0123456789abcdef").status_code == 404
    for j in (job, render):
        while j["state"] in ("queued", "running"):
            time.sleep(0.5)
            j = api.get(f"/api/jobs/{j['id']}").json()
        assert j["state"] == "done", j
    assert "ann" in [a["name"] for a in api.get("/api/avatars").json()]
    mp4 = api.get(f"/api/jobs/{render['id']}/result")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    out = tmp_path / "r.mp4"
    out.write_bytes(mp4.content)
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == FrameClock(25).frame_count(round(len(samples) * SAMPLE_RATE / rate))
    metrics = api.get("/metrics").text
    for name in ("lipstream_frame_latency_seconds_bucket", "lipstream_frames_sent_total", "lipstream_output_fps",
                 "lipstream_frames_dropped_total", "lipstream_renderer_fallbacks_total", "lipstream_errors_total",
                 "lipstream_sessions_active"):
        assert name in metrics
    assert 'lipstream_errors_total{code="BAD_MESSAGE"}' in metrics


def test_a_crashed_worker_ends_its_sessions_cleanly_and_is_replaced(server, voice):
    import psutil

    samples, rate = voice
    workers = [c for c in psutil.Process(server.process.pid).children() if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2

    async def session():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "width": 128, "sampleRate": rate, "idleFrames": False}))
            await ws.recv()
            await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(samples[: rate // 2]).decode()}))
            for w in workers:
                w.kill()
            return await collect(ws), ws.close_code

    messages, code = run(session())
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == p.INTERNAL and code == 1011
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.http}/health").json()["workers"]["alive"] < 2 and time.monotonic() < deadline:
        time.sleep(0.5)

    async def again():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "width": 128, "sampleRate": rate}))
            started = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(samples[:rate]).decode()}))
            await ws.send('{"type":"end"}')
            return started, await collect(ws)

    started, messages = run(again())
    assert started["event"] == "started"
    assert sum(m["type"] == "response_video" for m in messages) >= 25
