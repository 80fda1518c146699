"""Floods on an authenticated socket: control messages, audio faster than real time. The
flooding session is closed (or slowed), not the server: a normal session streaming meanwhile
keeps its frames, no session slot stays taken, the server's memory stays put. The floods last a
few seconds here; `lipstream bench attack` runs them at full length (15 s)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

import numpy as np
import websockets

from adversarial.conftest import AUTH
from live_server import health, normal_session, tree_rss_mib
from lipstream.server.limits import TokenBucket

FLOOD_S = 4.0
MIN_FRAME_SHARE = 0.9  # the bench's bar is 95%; a busy 2-core machine may drop a late frame or two
MAX_GROWTH_MIB = 100


async def switch_flood(ws_url: str, seconds: float) -> dict:
    """Send `switch` messages as fast as the socket takes them (reconnecting when closed, reading
    nothing but the answers that close it); returns counts of messages sent and closes seen."""
    sent = closes = 0
    codes = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with websockets.connect(ws_url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "renderer": "static", "driver": "energy", "width": 64}))
            try:
                while time.monotonic() < deadline:
                    renderer = ("warp", "static")[sent % 2]
                    await ws.send(json.dumps({"type": "switch", "renderer": renderer}))
                    sent += 1
                    if sent % 64 == 0:
                        await asyncio.sleep(0)
            except websockets.ConnectionClosed:
                pass
            with contextlib.suppress(websockets.ConnectionClosed, asyncio.TimeoutError):
                while True:  # the closing reasons, once the server has said
                    message = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    if message["type"] == "error":
                        codes.add(message["code"])
            closes += 1
    return {"sent": sent, "closes": closes, "codes": codes}


def test_a_control_flood_closes_that_session_only(server, speech16):
    samples, rate = speech16
    before = tree_rss_mib(server.process.pid)

    async def scenario():
        normal = asyncio.create_task(normal_session(server.ws, AUTH, samples[: int(rate * (FLOOD_S + 2))], rate))
        flood = await switch_flood(server.ws, FLOOD_S)
        return flood, await normal

    flood, (received, expected) = asyncio.run(scenario())
    assert "RATE_LIMITED" in flood["codes"], flood
    assert received >= MIN_FRAME_SHARE * expected, (received, expected, flood)
    assert tree_rss_mib(server.process.pid) - before < MAX_GROWTH_MIB
    deadline = time.monotonic() + 10
    while health(server)["sessions"] and time.monotonic() < deadline:  # no phantom session keeps a slot
        time.sleep(0.2)
    assert health(server)["sessions"] == 0 and health(server)["status"] == "ok"


def test_audio_faster_than_four_times_real_time_is_slowed_down(server):
    """A client pushing audio as fast as it can: reading pauses so that it averages at most 4x."""
    seconds = 20.0
    chunk = np.zeros(1600, np.int16).tobytes()  # 100 ms

    async def push():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "renderer": "static", "driver": "energy", "width": 64,
                                      "idleFrames": False}))
            t0 = time.monotonic()
            for n in range(int(seconds * 10)):
                await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(chunk).decode(),
                                          "sequenceNumber": n}))
            await ws.send(json.dumps({"type": "ping", "id": "last"}))
            async for raw in ws:  # the pong comes once the server has read everything before it
                if json.loads(raw).get("type") == "pong":
                    return time.monotonic() - t0

    elapsed = asyncio.run(asyncio.wait_for(push(), 50))
    burst_s = 5.0
    assert elapsed >= (seconds - burst_s) / 4 * 0.9, elapsed  # 20 s of audio took at least ~3.4 s to be taken


def test_token_bucket_with_an_injected_clock():
    now = [0.0]
    bucket = TokenBucket(rate=5, burst=20, clock=lambda: now[0])
    assert all(bucket.take() for _ in range(20)) and not bucket.take()
    now[0] += 1.0
    assert sum(bucket.take() for _ in range(10)) == 5
    audio = TokenBucket(rate=4, burst=5, clock=lambda: now[0])
    assert audio.charge(5) == 0 and audio.charge(2) == 0.5  # 2 s over: wait 0.5 s at 4x
    now[0] += 0.5
    assert audio.charge(0) == 0
