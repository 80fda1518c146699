"""`lipstream bench attack`: issue 11's attacks at full scale against `serve --token` on loopback.

Each attack runs against one server (2 workers, the defaults of `lipstream serve`) while the
server's process tree (server, workers, job processes) is sampled every 50 ms:

- jobs: two render jobs one after the other (the second once failed for good);
- switch flood: FLOOD_S of `switch` messages from a client that reconnects whenever it is
  closed, while a seed-002 session streams; seed-002 sessions before (no attack: what this
  machine gives) and after it (bars: the one after gets >= 95% of its frames, the tree grows
  < 100 MiB);
- unread pings: WebSocket pings that are never read (up to FLOOD_S / 2 each, until the server
  stops reading), from a client with the token and one without (bar: the tree grows < 50 MiB);
- an upload named `default` (bar: 4xx);
- a 2 KB video claiming 3 h, a 20000 x 20000 PNG, a 3 h silent FLAC to render (bars: refused
  within 30 s with a 4xx or a failed job, no spike over 500 MiB);
- fuzzing: `load.FUZZ_MESSAGES` malformed messages while sessions stream (bar: no crash, no frame
  lost), with the token (the fuzzers are authorized, so the parser sees every message).

The hostile files are made on the fly (`lipstream.bench.hostile_media`); hostile clients that
need CPU run in a process of their own at the lowest priority (`load.ATTACKER_NICE`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import multiprocessing as mp
import os
import socket
import tempfile
import threading
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.bench import hostile_media
from lipstream.bench.load import ATTACKER_NICE, ServerProcess, bench_fuzz
from lipstream.bench.machine import machine_info
from lipstream.bench.render import looped_speech

TOKEN = "attack-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLOOD_S = 15.0
STOPPED_READING_S = 2.0  # a socket that takes no byte for this long: the server stopped reading
SESSION_S = 20.0
REFUSED_WITHIN_S = 30.0
BARS = {"frame_share": 0.95, "flood_growth_mib": 100.0, "ping_growth_mib": 50.0, "spike_mib": 500.0}


class MemoryWatch:
    """Samples the server's process tree every 50 ms in a thread: baseline, peak, last (MiB)."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.baseline = self.peak = self.server.rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self.server.rss_mib()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.server.rss_mib())

    def report(self) -> dict:
        return {"rss_before_mib": round(self.baseline, 1), "rss_peak_mib": round(self.peak, 1),
                "rss_after_mib": round(self.after, 1), "growth_mib": round(self.after - self.baseline, 1),
                "spike_mib": round(self.peak - self.baseline, 1)}


async def seed_session(url: str, audio: np.ndarray) -> dict:
    """A client written from seed 002 alone: `lipsync_audio` in real time (20 ms PCM16 chunks),
    `response_video` out; counts its speech frames against the clock's."""
    import websockets

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    step = SAMPLE_RATE // 50
    expected = FrameClock(25).frame_count(len(pcm))
    frames: set[int] = set()
    errors: list[str] = []
    all_sent = asyncio.Event()
    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        async def read():
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "response_video" and not msg["idle"]:
                    frames.add(msg["frameIndex"])
                elif msg["type"] == "error":
                    errors.append(msg["code"])
                elif msg.get("event") == "turn_ended" and all_sent.is_set():  # the last turn's frames are out
                    return

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
            await ws.send(json.dumps({
                "type": "lipsync_audio", "sessionId": "normal", "userId": "user",
                "audioChunk": {"data": base64.b64encode(pcm[i : i + step].tobytes()).decode(), "sequenceNumber": n,
                               "timestamp": 0, "sampleRate": SAMPLE_RATE, "channels": 1, "format": "pcm"},
                "faceModelId": "default", "modelPreference": "warp"}))
        all_sent.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 30)
    return {"frames_expected": expected, "frames_received": len(frames),
            "share": round(len(frames) / expected, 4), "errors": errors}


async def switch_flood(url: str, seconds: float) -> dict:
    """`switch` messages as fast as the socket takes them, reconnecting whenever it is closed."""
    import websockets

    sent = connections = 0
    codes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connections += 1
        async with websockets.connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "start", "renderer": "static", "width": 64}))
            with contextlib.suppress(websockets.ConnectionClosed):
                while time.monotonic() < deadline:
                    await ws.send(json.dumps({"type": "switch", "renderer": ("warp", "static")[sent % 2]}))
                    sent += 1
                    if sent % 64 == 0:
                        await asyncio.sleep(0)
            with contextlib.suppress(websockets.ConnectionClosed, asyncio.TimeoutError):
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    if msg["type"] == "error":
                        codes[msg["code"]] = codes.get(msg["code"], 0) + 1
    return {"seconds": seconds, "messages_sent": sent, "connections": connections, "errors_by_code": codes}


def attack_switch_flood(server: ServerProcess) -> dict:
    """The flood comes from another process (an attacker is another client: sharing this one's
    event loop would starve the normal client's reading, not the server)."""
    audio = looped_speech(SESSION_S)
    normal_before = asyncio.run(seed_session(server.url, audio))  # the machine's own share, no attack
    with MemoryWatch(server) as memory, ProcessPoolExecutor(
            1, mp_context=mp.get_context("spawn"), initializer=os.nice, initargs=(ATTACKER_NICE,)) as attacker:
        flood_future = attacker.submit(_run_switch_flood, server.url, FLOOD_S)
        normal_during = asyncio.run(seed_session(server.url, audio))
        flood = flood_future.result()
    normal_after = asyncio.run(seed_session(server.url, audio))
    # The bar is on the session after the flood; the one during it is reported beside it.
    holds = normal_after["share"] >= BARS["frame_share"] and memory.after - memory.baseline < BARS["flood_growth_mib"]
    return {"flood": flood, "normal_session_before": normal_before, "normal_session_during": normal_during,
            "normal_session_after": normal_after,
            "memory": memory.report(), "holds": holds}


def _run_switch_flood(url: str, seconds: float) -> dict:
    return asyncio.run(switch_flood(url, seconds))


def attack_unread_pings(server: ServerProcess) -> dict:
    """Two raw sockets (with the token, without) send pings, up to FLOOD_S / 2 each, and never read."""
    results = {}
    with MemoryWatch(server) as memory:
        for label, token in (("with_token", TOKEN), ("without_token", None)):
            sock = raw_websocket(server.port, token)
            sock.setblocking(False)
            results[label] = flood_pings(sock, FLOOD_S / 2)
            results[label]["dropped_by_server_within_s"] = time_to_drop(sock, 30.0)
            sock.close()
    growth = memory.peak - memory.baseline
    return {**results, "memory": memory.report(), "holds": growth < BARS["ping_growth_mib"]}


def attack_upload_default(server: ServerProcess) -> dict:
    import httpx

    from lipstream.avatar.resolve import bundled_asset

    response = httpx.post(f"{server.http}/api/avatars", headers=AUTH, timeout=30, data={"name": "default"},
                          files={"file": ("me.png", bundled_asset("portrait.png").read_bytes())})
    return {"status": response.status_code, "holds": 400 <= response.status_code < 500}


def attack_huge_input(server: ServerProcess, path: str, field: str, source: Path, data: dict) -> dict:
    import httpx

    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=60)
    started = time.monotonic()
    with MemoryWatch(server) as memory:
        response = api.post(path, files={field: (source.name, source.read_bytes())}, data=data)
        outcome = {"status": response.status_code}
        if response.status_code == 202:
            job = response.json()
            while job["state"] in ("queued", "running") and time.monotonic() - started < 120:
                time.sleep(0.1)
                job = api.get(f"/api/jobs/{job['id']}").json()
            outcome.update(state=job["state"], error_kind=job["errorKind"], error=job["error"])
    refused_s = time.monotonic() - started
    refused = 400 <= response.status_code < 500 or outcome.get("state") == "failed"
    return {"file_bytes": source.stat().st_size, **outcome, "refused_after_s": round(refused_s, 2),
            "memory": memory.report(),
            "holds": refused and refused_s < REFUSED_WITHIN_S and memory.peak - memory.baseline < BARS["spike_mib"]}


def attack_jobs_in_a_row(server: ServerProcess) -> dict:
    import httpx

    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=60)
    audio = _wav(looped_speech(5.0))
    states = []
    for _ in range(2):
        job = api.post("/api/render", files={"audio": ("speech.wav", audio)}).json()
        while job.get("state") in ("queued", "running"):
            time.sleep(0.3)
            job = api.get(f"/api/jobs/{job['id']}").json()
        states.append(job.get("state", str(job)))
    return {"states": states, "holds": states == ["done", "done"]}


def run_attack_bench(out: Path | None = None, fuzz_messages: int | None = None) -> dict:
    """Every attack above against one `serve --token` on loopback; writes the JSON to `out`."""
    results: dict = {"machine": machine_info(), "bars": BARS, "flood_s": FLOOD_S}
    tmp = Path(tempfile.mkdtemp(prefix="lipstream-attack-"))
    fuzz = {} if fuzz_messages is None else {"messages": fuzz_messages}
    attacks = {
        "jobs_in_a_row": attack_jobs_in_a_row,
        "switch_flood": attack_switch_flood,
        "unread_pings": attack_unread_pings,
        "upload_named_default": attack_upload_default,
        "video_claiming_3h": lambda server: attack_huge_input(
            server, "/api/avatars", "file", hostile_media.long_claim_video(tmp / "long.mkv"), {"name": "long"}),
        "png_20000x20000": lambda server: attack_huge_input(
            server, "/api/avatars", "file", hostile_media.png_bomb(tmp / "bomb.png"), {"name": "bomb"}),
        "flac_silent_3h": lambda server: attack_huge_input(
            server, "/api/render", "audio", hostile_media.silent_flac(tmp / "silence.flac"), {}),
        "fuzz": lambda server: bench_fuzz(server.url, server, SESSION_S, headers=AUTH, **fuzz),
    }
    with ServerProcess(token=TOKEN, avatars_dir=str(tmp / "avatars"), workers=2) as server:
        for name, attack in attacks.items():
            load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
            results[name] = {**attack(server), "load_average_1m": [round(load_before, 2),
                                                                   round(os.getloadavg()[0], 2)]}
        results["server_alive"] = server.process.poll() is None
    results["holds"] = all(v.get("holds", True) for v in results.values() if isinstance(v, dict))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results


def _wav(audio: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def raw_websocket(port: int, token: str | None, receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket handshake on a plain, blocking socket, so that nothing reads for the client
    afterwards; `receive_buffer` (bytes) caps the kernel's receive buffer. Raises AssertionError
    unless the server switched protocols (101)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def ping_frames(count: int = 64) -> bytes:
    """`count` masked WebSocket pings of 125 bytes each, as a client sends them."""
    mask, payload = os.urandom(4), b"x" * 125
    frame = bytes([0x89, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return frame * count


def flood_pings(sock: socket.socket, max_seconds: float) -> dict:
    """Send pings on a non-blocking socket, reading nothing, until the server has taken no byte for
    STOPPED_READING_S (it stopped reading), drops the socket, or `max_seconds` pass.

    How many bytes that takes depends on the kernel's buffers on both sides (megabytes on
    loopback), not on time: a fixed flood length stopped short of them on a slower machine."""
    frames, sent = ping_frames(), 0
    started = time.monotonic()
    blocked_since, stopped_reading = None, False
    while time.monotonic() - started < max_seconds:
        try:  # a partial send is continued, not restarted: a cut frame is a protocol error
            sent += sock.send(frames[sent % len(frames):])
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since >= STOPPED_READING_S:
                stopped_reading = True
                break
            time.sleep(0.01)
        except OSError:
            break
    return {"seconds": round(time.monotonic() - started, 1), "ping_bytes_taken": sent,
            "server_stopped_reading": stopped_reading}


def time_to_drop(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closes or resets the socket (still reading nothing); None if not."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            sock.send(ping_frames(1))
        except BlockingIOError:
            pass
        except OSError:
            return round(time.monotonic() - started, 1)
        time.sleep(0.2)
    return None
