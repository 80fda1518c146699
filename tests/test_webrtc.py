"""POST /webrtc/offer on a real server, with an in-process aiortc client over loopback: the
avatar and the voice arrive, the token and the session limit hold, bad offers get a 4xx, and
closing (or never connecting) frees the session."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from conftest import espeak
from live_server import start_server, stop_server
from lipstream.server import protocol as p

pytest.importorskip("aiortc", reason="WebRTC needs: pip install 'lipstream[webrtc]'")

from webrtc_client import OfferClient  # noqa: E402

TOKEN = "webrtc-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONNECT_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("webrtc-server"), max_sessions=1, token=TOKEN,
                     webrtc_connect_timeout_s=CONNECT_TIMEOUT_S)
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return espeak("hello there, this is the lipstream avatar talking over web r t c",
                  tmp_path_factory.mktemp("webrtc-voice") / "voice.wav")


def run(coro, timeout_s: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def sessions(server) -> int:
    return httpx.get(f"{server.http}/health").json()["sessions"]


def wait_for_sessions(server, count: int, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sessions(server) == count:
            return True
        time.sleep(0.2)
    return False


def test_avatar_and_voice_arrive_and_closing_frees_the_session(server, wav):
    async def talk():
        client = OfferClient(wav)
        response = await client.connect(server.http, AUTH, avatar="default", preset="low", width=128)
        assert response.status_code == 200, response.text
        assert response.json()["type"] == "answer"
        await asyncio.sleep(6.0)
        listed = httpx.get(f"{server.http}/api/sessions", headers=AUTH).json()
        await client.close()
        return client, listed

    client, listed = run(talk())
    assert [s["format"] for s in listed] == ["webrtc"]
    started = client.events("started")
    assert started and started[0]["transport"] == "webrtc" and started[0]["width"] == 128
    assert len(client.video) >= 50  # frames keep coming (idle ones too) while the peer is open
    height, width, _ = client.video[-1][1].shape  # smaller if the loaded machine looked like a congested link
    assert height == width and 64 <= width <= 128
    assert np.std(client.video[-1][1]) > 10  # a face, not a flat image
    voice = np.concatenate([a for _, a, _ in client.audio])
    assert client.audio[0][2] == 48000
    assert np.abs(voice.astype(np.int32)).max() > 3000  # the echoed voice, not silence
    assert client.events("stats"), client.messages
    assert wait_for_sessions(server, 0)  # closing the peer connection freed the slot


def test_token_bad_offers_and_the_session_limit(server, wav):
    async def scenario():
        out = {}
        out["no_token"] = (await OfferClient(wav).connect(server.http, {}, avatar="default")).status_code
        bad = OfferClient()
        async with httpx.AsyncClient(timeout=30) as http:
            out["garbage"] = await http.post(f"{server.http}/webrtc/offer", headers=AUTH,
                                             json={"sdp": "v=0\r\nthis is not sdp", "type": "offer"})
            out["no_type"] = await http.post(f"{server.http}/webrtc/offer", headers=AUTH, json={"sdp": "v=0"})
            out["not_json"] = await http.post(f"{server.http}/webrtc/offer", headers=AUTH, content=b"{")
            audio_only = RTCPeerConnectionOnlyAudio()
            out["audio_only"] = await http.post(f"{server.http}/webrtc/offer", headers=AUTH,
                                                json={"sdp": await audio_only.offer(), "type": "offer"})
            await audio_only.close()
            out["bad_preset"] = await http.post(f"{server.http}/webrtc/offer", headers=AUTH,
                                                json={"sdp": await bad.offer(), "type": "offer", "preset": "fastest"})
        await bad.close()
        out["sessions_after_bad"] = sessions(server)
        first, second = OfferClient(wav), OfferClient(wav)
        out["first"] = (await first.connect(server.http, AUTH, width=96)).status_code
        out["second"] = await second.connect(server.http, AUTH, width=96)
        await first.close()
        await second.close()
        out["freed"] = await asyncio.to_thread(wait_for_sessions, server, 0)
        third = OfferClient(wav)
        out["third"] = (await third.connect(server.http, AUTH, width=96)).status_code
        await third.close()
        return out

    out = run(scenario())
    assert out["no_token"] == 401
    assert out["garbage"].status_code == 400 and out["garbage"].json()["error"] == "BAD_SDP"
    assert out["no_type"].status_code == 422 and out["not_json"].status_code == 422
    assert out["audio_only"].status_code == 400 and "video" in out["audio_only"].json()["message"]
    assert out["bad_preset"].status_code == 400 and "fastest" in out["bad_preset"].text
    assert out["sessions_after_bad"] == 0
    assert out["first"] == 200
    assert out["second"].status_code == 503 and out["second"].json()["error"] == p.SESSION_LIMIT
    assert out["second"].headers["retry-after"]
    assert out["freed"] and out["third"] == 200
    assert wait_for_sessions(server, 0)


def test_a_peer_that_never_connects_is_freed(server, wav):
    async def scenario():
        client = OfferClient(wav)
        sdp = await client.offer()
        async with httpx.AsyncClient(timeout=30) as http:  # answered, but the answer is never applied
            response = await http.post(f"{server.http}/webrtc/offer", headers=AUTH,
                                       json={"sdp": sdp, "type": "offer", "width": 96})
        held = sessions(server)
        await client.close()
        return response.status_code, held

    status, held = run(scenario())
    assert status == 200 and held == 1
    assert wait_for_sessions(server, 0, timeout_s=CONNECT_TIMEOUT_S + 10)
    metrics = httpx.get(f"{server.http}/metrics", headers=AUTH).text
    assert 'lipstream_errors_total{code="SESSION_LIMIT"}' in metrics


def test_a_congested_link_steps_quality_down_to_15_fps_and_metrics_count_it(server, wav):
    async def scenario():
        client = OfferClient(wav)
        assert (await client.connect(server.http, AUTH, width=128)).status_code == 200
        await asyncio.sleep(2.0)
        for _ in range(40):  # the receiver says the link carries 10 kbit/s: less than the video sent
            await client.send_estimate(10_000)
            await asyncio.sleep(0.2)
        arrivals = [t for t, _ in client.video]
        last = client.video[-1][1].shape
        await client.close()
        return client, arrivals, last

    client, arrivals, last = run(scenario())
    steps = client.events("quality")
    assert [s["direction"] for s in steps] == ["down"] * len(steps)
    assert [s["step"] for s in steps if s["step"] != "bitrate"] == ["resolution", "resolution", "fps", "fps"]
    assert steps[-1]["fps"] == 15 and steps[-1]["width"] == 64
    assert last == (64, 64, 3)  # the frames the client got are the smaller ones
    recent = [t for t in arrivals if t > arrivals[-1] - 2.0]
    assert len(recent) <= 2.0 * 15 * 1.2  # thinned to 15 fps (what comes may be fewer on a busy machine)
    metrics = httpx.get(f"{server.http}/metrics", headers=AUTH).text
    for knob in ("bitrate", "resolution", "fps"):
        assert f'lipstream_webrtc_quality_steps_total{{direction="down",knob="{knob}"}}' in metrics
    assert wait_for_sessions(server, 0)


class RTCPeerConnectionOnlyAudio:
    """An offer with audio and no video m-line (which the server can't answer with the avatar)."""

    def __init__(self):
        from aiortc import RTCPeerConnection

        self.pc = RTCPeerConnection()

    async def offer(self) -> str:
        self.pc.addTransceiver("audio", direction="sendrecv")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        await self.pc.close()
