"""`lipstream bench ray`: `lipstream serve --ray local` on this machine against issue 14's bar.

Starts `lipstream serve --ray local --replicas 2 --sessions-per-replica 2` in a child process
(timing its start), then runs two rounds of 4 concurrent seed-002 clients (`lipsync_audio`
JSON, 100 ms chunks in real time, the bundled speech): a short warm-up round (the replicas'
workers load the avatar; the round after it also shows that the first round's sessions were
released) and the measured round of `seconds`. Per client: its replica (the handshake's
x-lipstream-replica header), whether the server accepted the permessage-deflate the client
offers (as browsers do), frames expected and received, the received frame rate and how far
frames came behind the 25 fps clock (arrival_rates), whether every frame's audioTimestamp is its index x 40 ms, and `lipstream eval`'s A/V offset of the
received frames muxed with the audio it sent. While the four stream, a 5th client must get
SESSION_LIMIT: the time from its first message to the error. The rounds start once /health
has answered from every replica; after them, the replicas' counts of dropped frames (by
reason) and of renderers going to half rate and back, from /metrics, and the CPU each part of
the process tree spent while the 4 streamed (per received frame). The same 4 clients then run
on a plain `lipstream serve` (2 workers) for comparison. Then the cost of a replica:
memory of the whole process tree (PSS: Ray's processes and the replicas' workers) against a
plain `lipstream serve`, and a WebSocket ping's round trip through the Serve proxy against the
plain server's.
"""

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
from pathlib import Path

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.bench.load import FPS, SEED_CHUNK_S, ServerProcess, _offset_of, _percentiles, send_paced
from lipstream.bench.machine import machine_info
from lipstream.bench.render import looped_speech

REPLICAS = 2
SESSIONS_PER_REPLICA = 2
WARM_UP_S = 2.0
SYNC_BAR_MS = 40.0
REFUSAL_BAR_S = 1.0
STEADY_SKIP_S = 1.0  # the received frame rate leaves out the first and last second (arrival_rates)
START_TIMEOUT_S = 300.0
PINGS = 40
PING_INTERVAL_S = 0.25  # control messages are limited to 5 a second (docs/security.md)
REPLICA_HEADER = "x-lipstream-replica"


class RayServeProcess:
    """`lipstream serve --ray local` in a child process on a free loopback port."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lipstream.cli", "serve", "--ray", "local", "--replicas", str(REPLICAS),
             "--sessions-per-replica", str(SESSIONS_PER_REPLICA), "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> tuple[float, float]:
        """Seconds from the command's start to its first healthy /health answer, and to answers
        from every replica (the router spreads requests: each answer names its replica)."""
        import httpx

        deadline = self.started + START_TIMEOUT_S
        first, seen = None, set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`lipstream serve --ray` exited with code {self.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"{self.http}/health", timeout=2)
                if answer.status_code == 200:
                    first = first or time.monotonic() - self.started
                    seen.add(answer.headers.get(REPLICA_HEADER))
                    if len(seen) == REPLICAS:
                        return first, time.monotonic() - self.started
            time.sleep(0.2)
        raise RuntimeError("`lipstream serve --ray` did not start all its replicas")

    def stop(self) -> None:
        """Ctrl+C (the command shuts its local Ray down), then whatever of Ray's processes is left."""
        import signal

        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def cpu_by_part(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of a process and its descendants, by part: `app` (the
    command itself: the whole plain server but its workers), `render workers`, and with Ray
    `proxy`, `replicas`, `hub`, `controller`, `ray (other)` (GCS, raylet, agents, monitors)."""
    import psutil

    parts: dict[str, float] = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times, cmd = proc.cpu_times(), " ".join(proc.cmdline())
            part = ("app" if proc.pid == pid else "render workers" if "spawn_main" in cmd
                    else "proxy" if "ProxyActor" in cmd else "hub" if "lipstream-hub" in cmd
                    else "replicas" if "ServeReplica" in cmd else "controller" if "ServeController" in cmd
                    else "ray (other)")
            parts[part] = parts.get(part, 0.0) + times.user + times.system
    return parts


def tree_pss_mib(pid: int) -> float:
    """Proportional set size (MiB) of a process and all its descendants."""
    import psutil

    total = 0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return round(total / 2**20, 1)


async def seed002_session(url: str, name: str, audio: np.ndarray, started: asyncio.Event,
                          hold: asyncio.Event) -> dict:
    """One seed-002 client: streams `audio` in real time; sets `started` at its first frame and
    stays connected until `hold` is set."""
    import websockets

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    n_frames = FrameClock(FPS).frame_count(len(pcm))
    frames: dict[int, tuple[float, bytes]] = {}
    on_clock, errors = True, []
    async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
        replica = ws.response.headers.get(REPLICA_HEADER)
        deflate = "permessage-deflate" in (ws.response.headers.get("sec-websocket-extensions") or "")

        async def read() -> None:
            nonlocal on_clock
            async for message in ws:
                msg = json.loads(message)
                if msg["type"] == "error":
                    errors.append(msg["code"])
                    started.set()  # (it never will)
                elif msg["type"] == "response_video" and not msg["idle"]:
                    started.set()
                    frames[msg["frameIndex"]] = (time.monotonic(), base64.b64decode(msg["frameData"]))
                    on_clock &= msg["audioTimestamp"] == round(msg["frameIndex"] * 1000 / FPS)
                    if msg["frameIndex"] >= n_frames - 1:
                        return

        reader = asyncio.create_task(read())
        with contextlib.suppress(websockets.ConnectionClosed):
            await send_paced(ws, pcm, SEED_CHUNK_S, lambda n, chunk: _lipsync_audio(name, n, chunk), once_recorded=True)
        with contextlib.suppress(asyncio.TimeoutError, websockets.ConnectionClosed):
            await asyncio.wait_for(reader, 15)
        await hold.wait()
    arrivals = {k: arrived for k, (arrived, _) in frames.items()}
    return {"replica": replica, "permessage_deflate": deflate, "frames_expected": n_frames, "frames_received": len(frames),
            **arrival_rates(arrivals, n_frames), "audio_timestamps_on_clock": on_clock, "errors": errors,
            "_frames": frames}


def arrival_rates(arrivals: dict[int, float], n_frames: int) -> dict:
    """From frame index -> arrival (monotonic s): `received_fps`, the rate at which frames came
    in steady state (those of index FPS * STEADY_SKIP_S to n_frames - that, first to last
    arrival); `received_fps_first_to_last`, over all frames, which also counts the wait for the
    last few: they need look-ahead past the end of the speech and come once the session sees it
    end (~0.25 s later); `behind_clock_ms_p95`, how late frame k came against first arrival + k / FPS."""
    skip = round(FPS * STEADY_SKIP_S)
    steady = sorted(t for k, t in arrivals.items() if skip <= k < n_frames - skip)
    every = sorted(arrivals.values())

    def rate(times: list[float]) -> float | None:
        return round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 1 and times[-1] > times[0] else None

    first = every[0] if every else 0.0
    behind = [(t - first - k / FPS) * 1000 for k, t in arrivals.items()]
    return {"received_fps": rate(steady), "received_fps_first_to_last": rate(every),
            "behind_clock_ms_p95": round(float(np.percentile(behind, 95)), 1) if behind else None}


async def refused_session(url: str, audio: np.ndarray) -> dict:
    """A client beyond the capacity: seconds from its first message to the error it gets."""
    import websockets

    pcm = (np.clip(audio[: int(SEED_CHUNK_S * SAMPLE_RATE)], -1, 1) * 32767).astype("<i2")
    async with websockets.connect(url, open_timeout=60) as ws:
        t0 = time.monotonic()
        await ws.send(_lipsync_audio("fifth", 0, pcm))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg["type"] == "error":
                return {"code": msg["code"], "seconds": round(time.monotonic() - t0, 3)}


async def one_round(url: str, seconds: float, fifth: bool, cpu_of: int | None = None) -> dict:
    """4 concurrent seed-002 clients (and a 5th with `fifth`); with `cpu_of` (a server's pid)
    also the CPU its process tree spent while they streamed, by part (cpu_by_part)."""
    audio = looped_speech(seconds)
    cpu_before, started_s = (cpu_by_part(cpu_of), time.monotonic()) if cpu_of else (None, None)
    hold = asyncio.Event()
    started = [asyncio.Event() for _ in range(REPLICAS * SESSIONS_PER_REPLICA)]
    tasks = [asyncio.create_task(seed002_session(url, f"bench-{n}", audio, started[n], hold))
             for n in range(len(started))]
    refusal = None
    try:
        with contextlib.suppress(asyncio.TimeoutError):  # (what the clients got says why)
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 120)
        if fifth:
            refusal = await refused_session(url, audio)
    finally:
        hold.set()
    clients = await asyncio.gather(*tasks)
    cpu = None
    if cpu_of:
        frames = sum(len(c["_frames"]) for c in clients)
        spent = {part: s - cpu_before.get(part, 0.0) for part, s in cpu_by_part(cpu_of).items()}
        cpu = {"wall_s": round(time.monotonic() - started_s, 1), "frames_received": frames,
               "cores": {part: round(s / (time.monotonic() - started_s), 3) for part, s in sorted(spent.items())},
               "ms_per_frame": {part: round(s * 1000 / max(frames, 1), 2) for part, s in sorted(spent.items())},
               "ms_per_frame_total": round(sum(spent.values()) * 1000 / max(frames, 1), 2)}
    replicas = [c["replica"] for c in clients]
    for client in clients:
        client["eval_offset_ms"] = _offset_of(client.pop("_frames"), audio)
    return {"seconds": seconds, "split": sorted(replicas.count(r) for r in set(replicas)), "clients": clients,
            "fifth": refusal, **({"cpu": cpu} if cpu else {})}


async def ping_rtts(url: str, count: int = PINGS) -> dict:
    """Round trips (ms) of `count` ping messages, PING_INTERVAL_S apart, on one connection."""
    import websockets

    rtts = []
    async with websockets.connect(url, open_timeout=60) as ws:
        for n in range(count):
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "ping", "id": n}))
            while json.loads(await ws.recv()).get("type") != "pong":
                pass
            rtts.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(PING_INTERVAL_S)
    return _percentiles(rtts[count // 10 :])  # the first tenth warms up


def run_ray_serve_bench(out: Path | None = None, seconds: float = 8.0) -> dict:
    """The measurements in the module docstring; writes the JSON to `out` if given."""
    results: dict = {"machine": machine_info(), "replicas": REPLICAS, "sessions_per_replica": SESSIONS_PER_REPLICA,
                     "load_avg_1min_before": round(os.getloadavg()[0], 2)}
    server = RayServeProcess()
    try:
        first, every = server.wait_ready()
        results["start_s"], results["all_replicas_up_s"] = round(first, 1), round(every, 1)
        results["pss_idle_mib"] = tree_pss_mib(server.process.pid)
        results["warm_up"] = asyncio.run(one_round(server.url, WARM_UP_S, fifth=False))
        results["measured"] = asyncio.run(one_round(server.url, seconds, fifth=True, cpu_of=server.process.pid))
        results["bar"] = bar(results["measured"], seconds)
        results["server_counts_both_rounds"] = server_counts(server.http)
        results["pss_after_sessions_mib"] = tree_pss_mib(server.process.pid)
        results["ping_rtt_ms_through_proxy"] = asyncio.run(ping_rtts(server.url))
        server.stop()
        with ServerProcess(max_sessions=REPLICAS * SESSIONS_PER_REPLICA, workers=REPLICAS) as plain:
            results["plain_pss_idle_mib"] = tree_pss_mib(plain.process.pid)
            asyncio.run(one_round(plain.url, WARM_UP_S, fifth=False))
            results["plain_measured"] = asyncio.run(one_round(plain.url, seconds, fifth=False, cpu_of=plain.process.pid))
            results["ping_rtt_ms_plain"] = asyncio.run(ping_rtts(plain.url))
        results["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    finally:
        server.stop()
        if out is not None:  # what was measured, even if a later step failed
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results


def server_counts(http: str) -> dict:
    """From /metrics (all replicas merged): frames dropped by reason and renderers' rate
    changes (half / full), summed over the replicas since they started."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict = {"frames_dropped": {}, "render_rate_changes": {}}
    for family in text_string_to_metric_families(httpx.get(f"{http}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "lipstream_frames_dropped_total":
                key, label = "frames_dropped", sample.labels["reason"]
            elif sample.name == "lipstream_render_rate_changes_total":
                key, label = "render_rate_changes", sample.labels["rate"]
            else:
                continue
            counts[key][label] = counts[key].get(label, 0) + int(sample.value)
    return counts


def bar(measured: dict, seconds: float) -> dict:
    """Issue 14's bar on the measured round: every frame at 25 fps, in sync, split 2/2, 5th refused in 1 s."""
    clients = measured["clients"]
    checks = {
        "all_frames": all(c["frames_received"] == c["frames_expected"] for c in clients),
        "fps_25": all(c["received_fps"] is not None and c["received_fps"] >= FPS * 0.98 for c in clients),
        "in_sync_40ms": all(c["eval_offset_ms"] is not None and abs(c["eval_offset_ms"]) <= SYNC_BAR_MS
                            for c in clients) and all(c["audio_timestamps_on_clock"] for c in clients),
        "split_2_2": measured["split"] == [SESSIONS_PER_REPLICA] * REPLICAS,
        "fifth_refused_1s": bool(measured["fifth"]) and measured["fifth"]["code"] == "SESSION_LIMIT"
        and measured["fifth"]["seconds"] <= REFUSAL_BAR_S,
    }
    return {**checks, "speech_s": seconds, "holds": all(checks.values())}


def _lipsync_audio(session: str, sequence: int, pcm16: np.ndarray) -> str:
    return json.dumps({"type": "lipsync_audio", "sessionId": session, "userId": "bench",
                       "audioChunk": {"data": base64.b64encode(pcm16.tobytes()).decode(),
                                      "timestamp": int(time.time() * 1000), "sequenceNumber": sequence,
                                      "sampleRate": SAMPLE_RATE, "channels": 1, "format": "pcm"},
                       "faceModelId": "default"})
