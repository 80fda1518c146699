"""The HTTP API attacked by a token holder and by anyone: owned avatar names, the token only
in the header (and never in a log), no server paths in errors, refusals at submit time."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from adversarial.conftest import AUTH, TOKEN
from lipstream.avatar.resolve import bundled_asset


def test_avatar_names_are_owned(server):
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    photo = bundled_asset("portrait.png").read_bytes()
    assert api.post("/api/avatars", files={"file": ("me.png", photo)}, data={"name": "default"}).status_code == 403
    assert api.post("/api/avatars", files={"file": ("me.png", photo)},
                    data={"name": "default", "replace": "true"}).status_code == 403
    (server.avatars / "taken").mkdir(parents=True)
    try:
        assert api.post("/api/avatars", files={"file": ("me.png", photo)}, data={"name": "taken"}).status_code == 409
    finally:
        (server.avatars / "taken").rmdir()


def test_a_render_of_an_unknown_avatar_is_refused_at_submit(server):
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    response = api.post("/api/render", files={"audio": ("a.wav", b"RIFF0000WAVE")}, data={"avatar": "nobody"})
    assert response.status_code == 404 and "nobody" in response.json()["detail"]


def test_the_token_only_in_the_header_for_http_and_never_logged(server):
    assert httpx.get(f"{server.http}/api/avatars?token={TOKEN}").status_code == 401
    assert httpx.get(f"{server.http}/api/avatars", headers=AUTH).status_code == 200

    async def browser_style():  # browsers can't set headers on a WebSocket: /ws takes ?token=
        async with websockets.connect(f"{server.ws}?token={TOKEN}") as ws:
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            return json.loads(await ws.recv())

    assert asyncio.run(browser_style()) == {"type": "pong", "id": 1}
    log = server.log.read_text()
    assert "/api/avatars?token=***" in log and "/ws?token=***" in log  # the lines are there, redacted
    assert TOKEN not in log


def test_errors_name_no_server_path(server):
    (server.avatars / "broken").mkdir(parents=True, exist_ok=True)  # a folder that is no package

    async def start_broken():
        async with websockets.connect(server.ws, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "avatar": "broken"}))
            return json.loads(await ws.recv())

    error = asyncio.run(start_broken())
    assert error["code"] == "FACE_MODEL_NOT_FOUND", error
    assert str(server.avatars) not in error["message"] and "/" not in error["message"], error

    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    job = api.post("/api/render", files={"audio": ("a.wav", b"RIFF" + bytes(200))}).json()
    while job["state"] in ("queued", "running"):
        job = api.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "failed" and job["errorKind"] == "BadAudioError", job
    assert str(server.tmp) not in job["error"] and "lipstream-jobs" not in job["error"], job
