"""`lipstream serve --ray`: 2 replicas of 2 sessions; 4 seed-002 clients (offering
permessage-deflate, which the proxy refuses) land 2 and 2 and each gets its frames on the clock; a 5th is refused at once with SESSION_LIMIT. Scaled down to one
replica, the stopped replica's session is told to reconnect (going_away, closeInMs) and closed
with 1012, and new sessions are served by the replica left."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import subprocess
import time
import wave
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

websockets = pytest.importorskip("websockets")

from ray_local import local_ray  # noqa: F401 (the fixture)
from lipstream.server.ray_front import GOING_AWAY_S, REPLICA_HEADER  # noqa: E402
from lipstream.server.ray_router import ROUTING_STATS_PERIOD_S  # noqa: E402
from lipstream.server.ray_serve import bind_application, lipstream_deployment, start_serve  # noqa: E402
from lipstream.server.state import ServerSettings  # noqa: E402

START_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def serve_app(local_ray, tmp_path_factory):
    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_serve("127.0.0.1", port)
    deployment = lipstream_deployment(ServerSettings(), replicas=2, sessions_per_replica=2)
    serve.run(bind_application(deployment), name="lipstream", route_prefix="/", blocking=False)
    http = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    replicas = set()
    while len(replicas) < 2:  # both replicas up: each answer names its replica
        try:
            answer = httpx.get(f"{http}/health", timeout=2)
            if answer.status_code == 200:
                replicas.add(answer.headers[REPLICA_HEADER.decode()])
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the Serve application did not start both replicas ({replicas})")
        time.sleep(0.2)
    yield SimpleNamespace(url=f"ws://127.0.0.1:{port}/ws", deployment=deployment)
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
    async with websockets.connect(url, open_timeout=60, compression="deflate") as ws:  # offered, as browsers do
        assert "sec-websocket-extensions" not in ws.response.headers  # the proxy refuses it (ray_proxy.py)
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
    url = serve_app.url

    async def main():
        hold = asyncio.Event()
        tasks = [asyncio.create_task(session(url, f"s{i}", samples, rate, hold)) for i in range(4)]
        await asyncio.sleep(3)  # all four have started
        try:
            took, error = await refused(url, samples, rate)
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


def settled() -> None:
    """Wait until every replica has reported its open sockets since the previous test closed its
    own: the router ranks replicas by those reports, which are up to a period old."""
    time.sleep(3 * ROUTING_STATS_PERIOD_S)


def test_one_scrape_of_metrics_has_every_replica(serve_app):
    from prometheus_client.parser import text_string_to_metric_families

    settled()

    async def replicas_of_two_sockets():
        async with websockets.connect(serve_app.url, open_timeout=60) as a, \
                websockets.connect(serve_app.url, open_timeout=60) as b:
            return {ws.response.headers.get(REPLICA_HEADER.decode()) for ws in (a, b)}

    replicas = asyncio.run(replicas_of_two_sockets())
    assert len(replicas) == 2  # the router put one on each
    metrics_url = serve_app.url.replace("ws://", "http://").replace("/ws", "/metrics")
    deadline = time.monotonic() + 60
    while True:  # each replica reports every few seconds
        text = httpx.get(metrics_url, timeout=10).text
        labelled = {s.labels.get("replica") for f in text_string_to_metric_families(text)
                    if f.name == "lipstream_sessions_active" for s in f.samples}
        if labelled == replicas or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert labelled == replicas


def test_a_job_is_answered_by_every_replica(serve_app, voice):
    """A render job taken by one replica: its state and video come from the other too (the hub)."""
    from collections import Counter

    samples, rate = voice
    settled()
    base = serve_app.url.replace("ws://", "http://").removesuffix("/ws")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(samples.tobytes())
    answer = httpx.post(f"{base}/api/render", files={"audio": ("v.wav", buffer.getvalue())},
                        data={"renderer": "warp"}, timeout=60)
    assert answer.status_code == 202, answer.text
    owner, job_id = answer.headers[REPLICA_HEADER.decode()], answer.json()["id"]

    def elsewhere(response) -> bool:
        return response.headers[REPLICA_HEADER.decode()] != owner

    async def main():
        """Sockets held open until the owner has more than the other replica, so that the router
        sends most of the next requests to the other one; poll the job until it is done, then
        ask for its state and video until the other replica has answered both (the router
        picks among replicas by load reports that lag, so one request alone may still reach
        the owner)."""
        sockets, count = [], Counter()
        try:
            while count[owner] <= max((n for r, n in count.items() if r != owner), default=0):
                ws = await websockets.connect(serve_app.url, open_timeout=60)
                sockets.append(ws)
                count[ws.response.headers.get(REPLICA_HEADER.decode())] += 1
            async with httpx.AsyncClient(timeout=60) as client:
                for _ in range(240):
                    state = await client.get(f"{base}/api/jobs/{job_id}")
                    if state.json().get("state") in ("done", "failed"):
                        break
                    await asyncio.sleep(0.5)
                state = video = None
                for _ in range(40):
                    if state is None or not elsewhere(state):
                        state = await client.get(f"{base}/api/jobs/{job_id}")
                    if video is None or not elsewhere(video):
                        video = await client.get(f"{base}/api/jobs/{job_id}/result")
                    if elsewhere(state) and elsewhere(video):
                        break
                    await asyncio.sleep(0.25)
            return state, video
        finally:
            for ws in sockets:
                await ws.close()

    state, video = asyncio.run(asyncio.wait_for(main(), 180))
    assert elsewhere(state) and elsewhere(video)
    assert state.status_code == 200 and state.json()["state"] == "done", state.text
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp" and len(video.content) > 10_000


async def streaming_until_closed(url: str, name: str, samples: np.ndarray, rate: int, started: asyncio.Event):
    """A session that keeps streaming (the voice, looped) until the server closes it; returns its
    replica, the statuses it got in order and the close code."""
    step = rate // 50
    statuses = []
    async with websockets.connect(url, open_timeout=60) as ws:
        replica = ws.response.headers.get(REPLICA_HEADER.decode())

        async def read():
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "response_video":
                        started.set()
                    elif message["type"] == "status":
                        statuses.append(message)

        reader = asyncio.create_task(read())
        n = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while not reader.done():
                i = (n * step) % (len(samples) - step)
                await ws.send(lipsync_audio(name, n, samples[i:i + step], rate))
                n += 1
                await asyncio.sleep(0.02)
        await reader
        return replica, statuses, ws.close_code


def test_a_replica_scaled_down_tells_its_session_to_reconnect_before_closing_it(serve_app, voice):
    from ray import serve

    samples, rate = voice

    async def main():
        started = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(streaming_until_closed(serve_app.url, f"d{i}", samples, rate, started[i]))
                 for i in range(2)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
        await asyncio.to_thread(serve.run, bind_application(serve_app.deployment.options(num_replicas=1)), name="lipstream",
                                route_prefix="/", blocking=False)
        done, _ = await asyncio.wait(tasks, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        assert done, "no session was closed by the scale-down"
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = [task.result() for task in done]
        hold = asyncio.Event()
        hold.set()
        served = await session(serve_app.url, "after", samples, rate, hold)  # the replica left serves it
        return closed, served

    (closed, (_, frames, errors)) = asyncio.run(asyncio.wait_for(main(), 180))
    for replica, statuses, code in closed:
        events = [s["event"] for s in statuses]
        assert code == 1012, (code, events)
        assert "going_away" in events and events.index("going_away") < events.index("ended"), events
        going = statuses[events.index("going_away")]
        assert going["closeInMs"] == GOING_AWAY_S * 1000
    assert frames and not errors
