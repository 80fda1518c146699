"""Backend history: a rolling record per backend of sessions' and jobs' outcomes, beside the
profiles, weighing `choose` (and so `--renderer auto` and `select`) and explained in its reason."""

from __future__ import annotations

import base64
import json
import multiprocessing

import pytest

from lipstream.errors import BadAudioError, RenderFailedError
from lipstream.select import Constraints, Profile, choose, load_history, record_outcome
from lipstream.select.history import MIN_RECORDS, WINDOW, record_render

WARP = Profile("warp", "viseme", fps=150, sync_offset_ms=-35, sync_grade="A")
BANK = Profile("bank", "phoneme", fps=450, sync_offset_ms=-20, sync_grade="A")


def test_rolling_record_keeps_the_last_outcomes(tmp_path):
    path = tmp_path / "history.json"
    for n in range(WINDOW + 10):
        record_outcome("warp", 40.0 + n % 2 * 20, ok=n >= 10, source="session", path=path, now=n)
    record = load_history(path)["warp"]
    assert record.count == WINDOW and record.ok_rate == 1.0  # the 10 failures fell out of the window
    assert record.latency_mean_ms == pytest.approx(50.0)
    assert load_history(tmp_path / "none.json") == {}


def test_a_failing_backend_loses_its_place_and_the_reason_says_why(tmp_path):
    path = tmp_path / "history.json"
    assert choose([WARP, BANK], Constraints()).profile.renderer == "bank"
    for n in range(MIN_RECORDS * 2):
        record_outcome("bank", 30.0, ok=n % 5 == 0, source="session", path=path)  # 20% ok
        record_outcome("warp", 45.0, ok=True, source="job", path=path)
    choice = choose([WARP, BANK], Constraints(), load_history(path))
    assert choice.profile.renderer == "warp"
    assert "10 runs, 100% ok" in choice.reason and "10 runs, 20% ok" in choice.reason


def test_too_few_outcomes_dont_count(tmp_path):
    path = tmp_path / "history.json"
    for _ in range(MIN_RECORDS - 1):
        record_outcome("bank", None, ok=False, source="job", path=path)
    choice = choose([WARP, BANK], Constraints(), load_history(path))
    assert choice.profile.renderer == "bank" and "in use" not in choice.reason


def _record_many(path, n):
    for _ in range(n):
        record_outcome("warp", 10.0, ok=True, source="session", path=path)


def test_writers_in_several_processes_lose_nothing(tmp_path):
    path = tmp_path / "history.json"
    procs = [multiprocessing.get_context("spawn").Process(target=_record_many, args=(path, 20)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert load_history(path)["warp"].count == 60


def test_renders_record_success_and_backend_failures_only(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSTREAM_PROFILES", str(tmp_path / "profiles.json"))  # history.json goes beside it
    with record_render("auto", "job") as record:
        record("warp")
    with pytest.raises(RenderFailedError), record_render("bank", "job"):
        raise RenderFailedError("encoder died")
    with pytest.raises(BadAudioError), record_render("bank", "job"):
        raise BadAudioError("not audio")  # the input's fault: not the backend's record
    rows = json.loads((tmp_path / "history.json").read_text())["backends"]
    assert [r[2] for r in rows["warp"]] == [True] and [r[2] for r in rows["bank"]] == [False]


def test_a_served_session_is_recorded_for_its_renderer(tmp_path, monkeypatch):
    import asyncio

    import numpy as np
    import websockets

    from live_server import start_server, stop_server

    monkeypatch.setenv("LIPSTREAM_PROFILES", str(tmp_path / "profiles.json"))  # the server inherits it
    server = start_server(tmp_path, max_sessions=1, workers=1)
    try:
        async def session():
            async with websockets.connect(server.ws) as ws:
                await ws.send(json.dumps({"type": "start", "renderer": "warp", "width": 128, "framing": "json"}))
                tone = (np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220) * 8000).astype("<i2")
                await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(tone.tobytes()).decode(),
                                          "sampleRate": 16000, "channels": 1, "format": "pcm16"}))
                await ws.send(json.dumps({"type": "end"}))
                return [m for m in map(json.loads, [raw async for raw in ws]) if m["type"] == "status"]

        statuses = {m["event"]: m for m in asyncio.run(asyncio.wait_for(session(), 60))}
        path = tmp_path / "history.json"
        for _ in range(100):  # written off the server's event loop, just after the socket closed
            if path.is_file():
                break
            asyncio.run(asyncio.sleep(0.1))
        record = load_history(path)[statuses["started"]["renderer"]]  # its first renderer
        fell_back = statuses["ended"]["stats"]["fallbacks"] > 0  # (a loaded machine may make warp too slow)
        assert record.count == 1 and record.ok_rate == (0.0 if fell_back else 1.0)
        assert record.latency_mean_ms == pytest.approx(statuses["ended"]["stats"]["latencyMs"]["p95"], abs=0.2)
    finally:
        stop_server(server)
