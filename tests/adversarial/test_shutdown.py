"""Ctrl+C stops the server within 5 s, even with a session streaming and a job running, and
leaves no process and no job file behind."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import psutil

from adversarial.conftest import AUTH, TOKEN
from adversarial.test_jobs import wav_bytes
from live_server import normal_session, start_server

STOP_WITHIN_S = 5.0


def test_first_ctrl_c_stops_everything_within_5_s(tmp_path_factory, speech16):
    samples, rate = speech16
    server = start_server(tmp_path_factory.mktemp("interrupted"), token=TOKEN, workers=2, log_level="info")
    children = psutil.Process(server.process.pid).children(recursive=True)
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    job = api.post("/api/render", files={"audio": ("a.wav", wav_bytes(np.tile(samples, 5), rate))}).json()
    streaming = threading.Thread(target=lambda: asyncio.run(_stream_until_cut(server, samples, rate)), daemon=True)
    streaming.start()
    while api.get(f"/api/jobs/{job['id']}").json()["state"] == "queued":
        time.sleep(0.1)
    time.sleep(1.0)  # the session streams, the job runs
    children = psutil.Process(server.process.pid).children(recursive=True)
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(STOP_WITHIN_S + 5)
    elapsed = time.monotonic() - started
    if server.process.poll() is None:
        server.process.kill()
    assert elapsed < STOP_WITHIN_S, f"took {elapsed:.1f} s: {server.log.read_text()[-1500:]}"
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not list(server.tmp.glob("lipstream-jobs-*"))


async def _stream_until_cut(server, samples, rate):
    try:
        await normal_session(server.ws, AUTH, np.tile(samples, 3), rate)
    except Exception:  # the server went away mid-stream: expected here
        pass
