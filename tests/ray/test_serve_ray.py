"""`lipstream serve --ray`: 2 replicas of 2 sessions; 4 seed-002 clients land 2 and 2 and each
gets its frames on the clock; a 5th is refused at once with SESSION_LIMIT."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import time
import wave

import httpx
import numpy as np
import pytest

websockets = pytest.importorskip("websockets")

from ray_local import local_ray  # noqa: F401 (the fixture)
from lipstream.server.ray_serve import REPLICA_HEADER, build_application  # noqa: E402
from lipstream.server.state import ServerSettings  # noqa: E402

START_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def serve_app(local_ray, tmp_path_factory):
    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_application(ServerSettings(), replicas=2, sessions_per_replica=2), name="lipstream",
              route_prefix="/", blocking=False)
    http = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{http}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the Serve application did not start")
        time.sleep(0.5)
    yield f"ws://127.0.0.1:{port}/ws"
    serve.shutdown()


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "v.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello there, this is a test of lip sync on ray"], check=True)
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def lipsync_audio(session: str, n: int, chunk: np.ndarray, rate: int) -> str:
    return json.dumps({"type": "lipsync_audio", "sessionId": session, "userId": "u",
                       "audioChunk": {"data": base64.b64encode(chunk.tobytes()).decode(), "timestamp": 20 * n,
                                      "sequenceNumber": n, "sampleRate": rate, "channels": 1, "format": "pcm"},
                       "faceModelId": "default"})


async def session(url: str, name: str, samples: np.ndarray, rate: int, hold: asyncio.Event):
    step = rate // 50
    async with websockets.connect(url, open_timeout=60) as ws:
        replica = ws.response.headers.get(REPLICA_HEADER.decode())
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(samples), step)):
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
            await ws.send(lipsync_audio(name, n, samples[i:i + step], rate))
        frames, errors = [], []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "error":
                errors.append(message)
            elif message["type"] == "response_video" and not message["idle"]:
                frames.append(message)
            elif message.get("event") == "turn_ended":
                break
        await hold.wait()  # stay connected until the 5th client has tried
        return replica, frames, errors


async def refused(url: str, samples: np.ndarray, rate: int) -> tuple[float, dict]:
    async with websockets.connect(url, open_timeout=60) as ws:
        t0 = time.monotonic()
        await ws.send(lipsync_audio("fifth", 0, samples[: rate // 50], rate))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "error":
                return time.monotonic() - t0, message


def test_four_sessions_split_two_and_two_and_a_fifth_is_refused(serve_app, voice):
    samples, rate = voice

    async def main():
        hold = asyncio.Event()
        tasks = [asyncio.create_task(session(serve_app, f"s{i}", samples, rate, hold)) for i in range(4)]
        await asyncio.sleep(3)  # all four have started
        try:
            took, error = await refused(serve_app, samples, rate)
        finally:
            hold.set()
        return await asyncio.gather(*tasks), took, error

    results, took, error = asyncio.run(asyncio.wait_for(main(), 180))
    assert error["code"] == "SESSION_LIMIT" and took < 1.0, (took, error)
    replicas = [r for r, _, _ in results]
    assert sorted(replicas.count(r) for r in set(replicas)) == [2, 2], replicas
    for _, frames, errors in results:
        assert not errors
        indices = [m["frameIndex"] for m in frames]
        assert indices == sorted(set(indices)) and len(indices) > 0
        assert all(m["audioTimestamp"] == 40 * m["frameIndex"] for m in frames)
