"""A real `lipstream serve` for tests: uvicorn on a free loopback port in a child process, with
helpers to watch it from outside (memory of its process tree, a normal session streaming)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import websockets

SERVER_START_TIMEOUT_S = 120


@dataclass
class Server:
    http: str
    ws: str
    avatars: Path
    process: subprocess.Popen
    log: Path
    tmp: Path  # the server's TMPDIR: where its jobs keep their files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, **options) -> Server:
    """`run_server` in a child process on a free loopback port; returns once /health answers."""
    port = free_port()
    avatars = tmp / "avatars"
    server_tmp = tmp / "server-tmp"
    server_tmp.mkdir(exist_ok=True)
    kwargs = {"host": "127.0.0.1", "port": port, "avatars_dir": str(avatars), "workers": 2, "log_level": "warning",
              **options}
    code = f"from lipstream.server.app import run_server; run_server(**{kwargs!r})"
    log = tmp / "server.log"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               env={**os.environ, "TMPDIR": str(server_tmp)})
    http = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{http}/health", timeout=1).status_code == 200:
                return Server(http, f"ws://127.0.0.1:{port}/ws", avatars, process, log, server_tmp)
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    pytest.fail("server did not start")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its children (MiB)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20


def health(server: Server) -> dict:
    return httpx.get(f"{server.http}/health", timeout=10).json()


async def normal_session(ws_url: str, headers: dict, samples: np.ndarray, rate: int,
                         start: dict | None = None) -> tuple[int, int]:
    """Stream int16 mono `samples` in real time (20 ms chunks, paced from a start time), end the
    session and count its speech frames: (received, expected)."""
    step = rate // 50
    chunks = [samples[i : i + step] for i in range(0, len(samples), step)]
    start = {"type": "start", "preset": "balanced", "renderer": "static", "driver": "energy", "width": 128,
             "sampleRate": rate, **(start or {})}
    received, expected = set(), None
    async with websockets.connect(ws_url, additional_headers=headers, max_size=2**24) as ws:
        await ws.send(json.dumps(start))

        async def read():
            nonlocal expected
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "response_video" and not msg["idle"]:
                    received.add(msg["frameIndex"])
                elif msg["type"] == "status" and msg["event"] == "started":
                    expected = round(len(samples) / rate * msg["fps"])
                elif msg["type"] == "error":
                    raise AssertionError(f"the normal session got an error: {msg}")

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        for n, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
            await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(chunk.tobytes()).decode()}))
        await ws.send(json.dumps({"type": "end"}))
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(reader, 30)
    return len(received), expected or 0
