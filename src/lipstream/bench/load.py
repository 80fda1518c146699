"""`lipstream bench load`: the real-time service under load, on this machine.

Starts `run_server` in a child process on 127.0.0.1 and drives it with simulated clients that
stream speech in real time (20 ms PCM16 chunks, binary framing), then measures:

- latency per preset: added latency of each speech frame, measured by the client from the
  moment it had sent the audio the frame needs (its own span plus the configured look-ahead) to
  the moment the frame arrived; p50/p95/p99, with the look-ahead reported beside it;
- time to first frame per preset: one session speaking FIRST_FRAME_TURNS turns of
  FIRST_FRAME_TURN_S each (20 ms chunks in real time, a flush and a pause between turns), from
  sending a turn's first chunk to receiving its first frame (the client's view) and the server's
  own figure (a turn's first chunk received to its first frame sent, `firstFrameMs`);
- a seed-002 client (`lipsync_audio` JSON only, no `start`, 100 ms chunks in real time, default
  preset): per frame, arrival minus the send time of the chunk holding the end of its audio;
  idle frames received; frame rate; and the A/V offset `lipstream eval` measures on the frames
  it received muxed with the audio it sent;
- capacity: N concurrent sessions at 25 fps, 256x256, `warp`: the largest N with no dropped
  frames and p95 added latency within LATENCY_BAR_MS;
- CPU per session (`cpu`), which other jobs on a shared machine inflate far less than wall time:
  one session pipeline in this process on a fake clock that each step moves on by the CPU time
  (`time.process_time`) it took, fed in real time: CPU seconds per second of audio, and the delays
  a machine with a free core for it would give (the seed-002 client's, and 20 ms chunks at 256x256
  for `ultra_low` and `low`); no sockets, so the network and encoding for the wire are left out;
- drift: a one-hour session, simulated faster than real time through the session pipeline
  (44.1 kHz stereo chunks of 10 ms to 1 s, speech once a minute): the offset between the mouth
  track and the audio, first minute against last;
- a slow client: server memory (server and workers) while a client reads one message a second;
- a throttled client: one whose link carries THROTTLED_KBPS from the server (a relay on loopback,
  lipstream.bench.link): frames received per second, the longest gap between two, how far they
  lag the audio (first half against second half: a backlog grows), the quality steps the server
  reported and its /metrics counters;
- fuzzing: FUZZ_MESSAGES malformed messages on other connections while sessions stream, one
  after another, for as long as the fuzzing lasts (the unit tests fuzz the parser alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.bench.machine import machine_info
from lipstream.bench.render import looped_speech

LATENCY_BAR_MS = 80.0
CHUNK_S = 0.02
FPS = 25.0
SIZE_PX = 256
FUZZ_MESSAGES = 100_000
ATTACKER_NICE = 19  # the hostile clients' CPU priority (lowest): they share this machine with the server
SERVER_START_TIMEOUT_S = 180.0
FIRST_FRAME_TURNS = 20
FIRST_FRAME_TURN_S = 1.0
FIRST_FRAME_PAUSE_S = 0.3
SEED_CHUNK_S = 0.1
# Issue 13's bars for the seed-002 client: delay p95, frames per second, |A/V offset| by `lipstream eval`.
SEED_DELAY_P95_BAR_MS = 250.0
SEED_MIN_FPS = 24.0
SEED_SYNC_BAR_MS = 40.0
FIRST_FRAME_P95_BAR_MS = {"ultra_low": 150.0, "low": 200.0}
THROTTLED_KBPS = 300.0
PARTS = ("latency", "first_frame", "seed002", "cpu", "capacity", "slow_client", "throttled", "fuzz", "drift")
KIND_AUDIO_IN, KIND_FRAME_OUT = 0x01, 0x02  # the wire protocol, as any client would write it
AUDIO_HEADER = struct.Struct("<BBHII")


@dataclass
class ClientResult:
    """What one simulated client saw."""

    preset: str
    expected_frames: int
    frames: int = 0
    added_ms: list[float] = field(default_factory=list)
    server_stats: dict = field(default_factory=dict)
    lookahead_ms: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.expected_frames - self.frames


class ServerProcess:
    """`run_server` in a child process on a free loopback port."""

    def __init__(self, **options):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        kwargs = {"host": "127.0.0.1", "port": self.port, "log_level": "warning", **options}
        code = f"from lipstream.server.app import run_server; run_server(**{kwargs!r})"
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}")
            try:
                if httpx.get(f"{self.http}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start")

    def rss_mib(self) -> float:
        import psutil

        proc = psutil.Process(self.process.pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def stream_client(url: str, audio: np.ndarray, preset: str, renderer: str = "warp",
                        start_delay_s: float = 0.0, headers: dict | None = None) -> ClientResult:
    """Stream float32 16 kHz `audio` in real time as PCM16 chunks; time every frame that comes back."""
    import websockets

    await asyncio.sleep(start_delay_s)
    clock = FrameClock(FPS)
    result = ClientResult(preset, clock.frame_count(len(audio)))
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    step = int(CHUNK_S * SAMPLE_RATE)
    arrivals: dict[int, float] = {}
    async with websockets.connect(url, max_size=None, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "start", "preset": preset, "renderer": renderer, "width": SIZE_PX,
                                  "fps": FPS, "framing": "binary"}))
        started = json.loads(await ws.recv())
        if started.get("type") == "error":
            result.errors.append(started["message"])
            return result
        result.lookahead_ms = started["lookaheadMs"]
        reader = asyncio.create_task(_read(ws, arrivals, result))
        times = np.array(await send_paced(ws, pcm, CHUNK_S, _audio_message))
        await ws.send(json.dumps({"type": "end"}))
        flush_s = time.monotonic()
        await asyncio.wait_for(reader, 60)
    lookahead = int(result.lookahead_ms * SAMPLE_RATE / 1000)
    ends = np.minimum(np.arange(1, len(times) + 1) * step, len(pcm))  # samples sent by each chunk's time
    for k, arrived in arrivals.items():
        i = int(np.searchsorted(ends, clock.frame_start(k + 1) + lookahead))
        needed_s = times[i] if i < len(times) else flush_s
        result.added_ms.append((arrived - needed_s) * 1000)
    result.frames = len(arrivals)
    return result


def _audio_message(sequence: int, pcm16: np.ndarray) -> bytes:
    """Binary audio (docs/protocol.md): kind 1, encoding 1 (pcm16), 1 channel, 16 kHz, sequence."""
    return AUDIO_HEADER.pack(KIND_AUDIO_IN, 1, 1, SAMPLE_RATE, sequence) + pcm16.tobytes()


async def send_paced(ws, pcm16: np.ndarray, chunk_s: float, message: Callable[[int, np.ndarray], bytes | str],
                     first_sequence: int = 0, once_recorded: bool = False) -> list[float]:
    """Send 16 kHz PCM16 `pcm16` over `ws` in real time, in chunks of `chunk_s` (the last may be
    shorter), chunk n as `message(first_sequence + n, chunk)`. Paced from one start, never by
    accumulated sleeps: chunk n goes at start + n * chunk_s, or at start + (n + 1) * chunk_s with
    `once_recorded` (a live microphone's chunk exists only once recorded). Returns each chunk's
    send time (monotonic s)."""
    step = int(chunk_s * SAMPLE_RATE)
    start, sent = time.monotonic(), []
    for n, i in enumerate(range(0, len(pcm16), step)):
        await asyncio.sleep(max(0.0, start + (n + once_recorded) * chunk_s - time.monotonic()))
        await ws.send(message(first_sequence + n, pcm16[i : i + step]))
        sent.append(time.monotonic())
    return sent


async def _read(ws, arrivals: dict[int, float], result: ClientResult) -> None:
    import websockets

    try:
        async for message in ws:
            now = time.monotonic()
            if isinstance(message, bytes):
                if message[0] == KIND_FRAME_OUT and not message[2] & 0x02:
                    arrivals[int.from_bytes(message[8:12], "little")] = now
                continue
            msg = json.loads(message)
            if msg["type"] == "error":
                result.errors.append(f"{msg['code']}: {msg['message']}")
            elif msg.get("event") == "ended":
                result.server_stats = msg["stats"]
    except websockets.ConnectionClosed:
        pass


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99)}


def _summary(results: list[ClientResult]) -> dict:
    added = [x for r in results for x in r.added_ms]
    return {
        "sessions": len(results),
        "frames_expected": sum(r.expected_frames for r in results),
        "frames_received": sum(r.frames for r in results),
        "frames_dropped": sum(r.dropped for r in results),
        "added_latency_ms": _percentiles(added),
        "lookahead_ms": results[0].lookahead_ms if results else None,
        "server_p95_ms_per_session": [r.server_stats.get("latencyMs", {}).get("p95") for r in results],
        "fallbacks": sum(r.server_stats.get("fallbacks", 0) for r in results),
        "errors": [e for r in results for e in r.errors][:5],
    }


def bench_latency(url: str, seconds: float) -> dict:
    """One real-time session per preset, one after another."""
    from lipstream.session.presets import PRESETS

    audio = looped_speech(seconds)
    out = {}
    for preset in PRESETS:
        load_before = os.getloadavg()[0]
        out[preset] = _summary([asyncio.run(stream_client(url, audio, preset))])
        out[preset]["load_avg_1min_before"] = round(load_before, 2)
    return out


def bench_first_frame(url: str, turns: int = FIRST_FRAME_TURNS) -> dict:
    """Time to first frame per preset: one session each, `turns` turns one after another."""
    from lipstream.session.presets import PRESETS

    out = {}
    for preset in PRESETS:
        load_before = os.getloadavg()[0]
        client_ms, server = asyncio.run(_first_frames(url, preset, turns))
        out[preset] = {"turns": len(client_ms), "client_ms": _percentiles(client_ms),
                       "server_ms": {k: server.get(k) for k in ("p50", "p95")},
                       "load_avg_1min_before": round(load_before, 2)}
        if preset in FIRST_FRAME_P95_BAR_MS:
            bar, p95 = FIRST_FRAME_P95_BAR_MS[preset], out[preset]["client_ms"]["p95"]
            out[preset].update(bar_p95_ms=bar, holds=p95 is not None and p95 <= bar)
    return out


async def _first_frames(url: str, preset: str, turns: int) -> tuple[list[float], dict]:
    """Per turn, ms from sending its first chunk to receiving its first speech frame; and the
    server's firstFrameMs from its final stats."""
    import websockets

    pcm = (np.clip(looped_speech(FIRST_FRAME_TURN_S), -1, 1) * 32767).astype("<i2")
    firsts: list[float] = []
    stats: dict = {}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "preset": preset, "renderer": "warp", "width": SIZE_PX,
                                  "fps": FPS, "framing": "binary"}))
        while not isinstance(started := await ws.recv(), str) or json.loads(started).get("event") != "started":
            pass  # an idle frame may come before the started status
        sequence = 0
        for _ in range(turns):
            frame_seen: asyncio.Future = asyncio.get_running_loop().create_future()
            flushed: asyncio.Future = asyncio.get_running_loop().create_future()

            async def read() -> None:
                async for message in ws:
                    if isinstance(message, bytes):
                        if message[0] == KIND_FRAME_OUT and not message[2] & 0x02 and not frame_seen.done():
                            frame_seen.set_result(time.monotonic())
                    elif json.loads(message).get("event") == "flushed":
                        flushed.set_result(None)
                        return

            reader = asyncio.create_task(read())
            sent = await send_paced(ws, pcm, CHUNK_S, _audio_message, first_sequence=sequence)
            sequence += len(sent)
            await ws.send(json.dumps({"type": "flush"}))
            await asyncio.wait_for(reader, 30)
            if frame_seen.done():
                firsts.append((frame_seen.result() - sent[0]) * 1000)
            await asyncio.sleep(FIRST_FRAME_PAUSE_S)
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            if isinstance(message, str) and json.loads(message).get("event") == "ended":
                stats = json.loads(message)["stats"].get("firstFrameMs", {})
                break
    return firsts, stats


def bench_seed002(url: str, seconds: float) -> dict:
    """The seed-002 client described in the module docstring, `seconds` of the bundled speech."""
    load_before = os.getloadavg()[0]
    audio = looped_speech(seconds)
    frames, sent, idle = asyncio.run(_seed002_client(url, audio))
    step = int(SEED_CHUNK_S * SAMPLE_RATE)
    clock = FrameClock(FPS)
    delays = [(arrived - sent[min((clock.frame_start(k + 1) - 1) // step, len(sent) - 1)]) * 1000
              for k, (arrived, _) in frames.items()]
    arrivals = sorted(arrived for arrived, _ in frames.values())
    span_s = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    result = {"chunk_ms": SEED_CHUNK_S * 1000, "frames_expected": clock.frame_count(len(audio)),
              "frames_received": len(frames), "idle_frames_received": idle,
              "arrival_minus_chunk_sent_ms": _percentiles(delays),
              "received_fps": round((len(arrivals) - 1) / span_s, 2) if span_s else None,
              "eval_offset_ms": _offset_of(frames, audio), "load_avg_1min_before": round(load_before, 2),
              "load_avg_1min_after": round(os.getloadavg()[0], 2)}
    p95, fps, offset = result["arrival_minus_chunk_sent_ms"]["p95"], result["received_fps"], result["eval_offset_ms"]
    result["bars"] = {"delay_p95_ms": SEED_DELAY_P95_BAR_MS, "idle_frames": 0, "min_fps": SEED_MIN_FPS,
                      "abs_offset_ms": SEED_SYNC_BAR_MS}
    result["holds"] = (p95 is not None and p95 <= SEED_DELAY_P95_BAR_MS and idle == 0 and fps is not None
                       and fps >= SEED_MIN_FPS and offset is not None and abs(offset) <= SEED_SYNC_BAR_MS)
    return result


async def _seed002_client(url: str, audio: np.ndarray) -> tuple[dict, list[float], int]:
    """Send `audio` as seed 002's lipsync_audio messages; returns {frameIndex: (arrival s, JPEG)},
    each chunk's send time and the number of idle frames received."""
    import base64

    import websockets

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    frames: dict[int, tuple[float, bytes]] = {}
    idle = 0
    n_frames = FrameClock(FPS).frame_count(len(pcm))
    async with websockets.connect(url, max_size=None) as ws:

        async def read() -> None:
            nonlocal idle
            async for message in ws:
                msg = json.loads(message)
                if msg.get("type") == "response_video":
                    if msg["idle"]:
                        idle += 1
                    else:
                        frames[msg["frameIndex"]] = (time.monotonic(), base64.b64decode(msg["frameData"]))
                    if msg["frameIndex"] >= n_frames - 1 and not msg["idle"]:
                        return

        def message(n: int, chunk: np.ndarray) -> str:
            return json.dumps({
                "type": "lipsync_audio", "sessionId": "bench-seed-002", "userId": "bench",
                "audioChunk": {"data": base64.b64encode(chunk.tobytes()).decode(),
                               "timestamp": int(time.time() * 1000), "sequenceNumber": n, "sampleRate": SAMPLE_RATE,
                               "channels": 1, "format": "pcm"},
                "faceModelId": "default"})

        reader = asyncio.create_task(read())
        sent = await send_paced(ws, pcm, SEED_CHUNK_S, message, once_recorded=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 10)
        await asyncio.sleep(1.0)  # anything after the last frame would be an idle frame
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                idle += msg.get("type") == "response_video" and msg["idle"]
    return frames, sent, idle


def _offset_of(frames: dict, audio: np.ndarray) -> float | None:
    """A/V offset (ms, lipstream eval) of the received frames (a missing one repeats the last)
    muxed with the audio that was sent."""
    import cv2

    from lipstream.evaluate import evaluate_video_sync
    from lipstream.sinks.mp4 import Mp4Writer

    if not frames:
        return None
    clock = FrameClock(FPS)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed002.mp4"
        image = None
        first = cv2.imdecode(np.frombuffer(frames[min(frames)][1], np.uint8), cv2.IMREAD_COLOR)
        with Mp4Writer(path, FPS, (first.shape[1], first.shape[0]), SAMPLE_RATE, 1) as writer:
            for k in range(clock.frame_count(len(audio))):
                if k in frames:
                    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(frames[k][1], np.uint8), cv2.IMREAD_COLOR),
                                         cv2.COLOR_BGR2RGB)
                start, end = clock.frame_span(k)
                writer.write(first[..., ::-1].copy() if image is None else image, audio[start:end, None])
        offset = evaluate_video_sync(path).offset_ms
    return None if offset is None else round(offset, 1)


def bench_cpu(seconds: float) -> dict:
    """The `cpu` part described in the module docstring."""
    cases = {"seed002_low_100ms_chunks": ("low", SEED_CHUNK_S, None), "ultra_low_20ms_chunks": ("ultra_low", CHUNK_S, SIZE_PX),
             "low_20ms_chunks": ("low", CHUNK_S, SIZE_PX)}
    out = {}
    for name, (preset, chunk_s, width) in cases.items():
        load_before = os.getloadavg()[0]
        out[name] = {"preset": preset, "chunk_ms": chunk_s * 1000, "width": width or "avatar's",
                     **_cpu_clocked_session(looped_speech(seconds), preset, chunk_s, width),
                     "load_avg_1min_before": round(load_before, 2)}
    return out


def _cpu_clocked_session(audio: np.ndarray, preset: str, chunk_s: float, width: int | None) -> dict:
    """One SessionPipeline on a clock moved by the CPU time of each step; chunk n is taken at
    (n + 1) * chunk_s, or when the previous work is done; frames are taken one at a time, as a
    worker sends them. Delay: a frame's completion minus its chunk's time, as `bench_seed002`."""
    from lipstream.avatar.resolve import resolve_avatar
    from lipstream.session import ManualClock
    from lipstream.stream.audio_in import AudioFormat
    from lipstream.stream.events import FrameOut
    from lipstream.stream.session import SessionConfig, SessionPipeline

    clock = ManualClock(0.0)
    pipeline = SessionPipeline(SessionConfig(preset=preset, width=width, idle_frames=False, silent_frames=True),
                               resolve_avatar("default"), clock=clock)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    step, fmt, frame_clock = int(chunk_s * SAMPLE_RATE), AudioFormat(SAMPLE_RATE, 1, "pcm16"), FrameClock(FPS)
    sent: list[float] = []
    done: dict[int, float] = {}
    cpu_total = 0.0
    for n, i in enumerate(range(0, len(pcm), step)):
        sent.append((n + 1) * chunk_s)
        clock.t = max(clock.t, sent[-1])
        start = time.process_time()
        pipeline.add_audio(pcm[i : i + step].tobytes(), fmt, sent[-1])
        while True:
            events = pipeline.process(1)
            used = time.process_time() - start
            clock.advance(used)
            cpu_total += used
            if not events:
                break
            done.update((e.index, clock.t) for e in events if isinstance(e, FrameOut) and not e.idle)
            start = time.process_time()
    delays = [(t - sent[min((frame_clock.frame_start(k + 1) - 1) // step, len(sent) - 1)]) * 1000 for k, t in done.items()]
    return {"frames_expected": frame_clock.frame_count(len(audio)), "frames_made": len(done),
            "cpu_s_per_audio_s": round(cpu_total / (len(audio) / SAMPLE_RATE), 3),
            "delay_after_chunk_sent_ms": _percentiles(delays)}


def bench_capacity(url: str, seconds: float, preset: str, max_sessions: int,
                   bar_ms: float | None = LATENCY_BAR_MS) -> dict:
    """1, 2, ... concurrent real-time sessions until two counts in a row fail: a count holds if no
    frame was dropped and (with `bar_ms`) the p95 added latency is within it."""
    audio = looped_speech(seconds)
    rows, best, failures = [], 0, 0
    for n in range(1, max_sessions + 1):
        load_before = os.getloadavg()[0]
        summary = _summary(asyncio.run(_concurrent(url, audio, preset, n)))
        summary["load_avg_1min_before"] = round(load_before, 2)  # other users of the machine
        p95 = summary["added_latency_ms"]["p95"]
        summary["holds"] = summary["frames_dropped"] == 0 and (bar_ms is None or (p95 is not None and p95 <= bar_ms))
        rows.append(summary)
        if summary["holds"]:
            best, failures = n, 0
        else:
            failures += 1
            if failures == 2:
                break
    return {"preset": preset, "renderer": "warp", "size": SIZE_PX, "fps": FPS, "bar_p95_ms": bar_ms,
            "max_sessions_holding": best, "by_sessions": rows}


async def _concurrent(url: str, audio: np.ndarray, preset: str, n: int) -> list[ClientResult]:
    """n clients at once, their starts spread over half a second (not in lock step)."""
    rng = random.Random(n)
    return await asyncio.gather(*(stream_client(url, audio, preset, start_delay_s=rng.uniform(0, 0.5))
                                  for _ in range(n)))


def bench_drift(hours: float = 1.0) -> dict:
    """A session fed `hours` of 44.1 kHz stereo audio in chunks of 10 ms to 1 s, faster than real
    time; the mouth-to-audio offset (cross-correlation, frames) of the first and last minute."""
    from lipstream.avatar.resolve import resolve_avatar
    from lipstream.stream.audio_in import AudioFormat
    from lipstream.stream.events import FrameOut
    from lipstream.session import ManualClock, Preset
    from lipstream.stream.session import SessionConfig, SessionPipeline

    rate, total_s = 44100, int(hours * 3600)
    clip = looped_speech(8.0)
    clip44 = np.interp(np.arange(int(len(clip) * rate / SAMPLE_RATE)) * SAMPLE_RATE / rate, np.arange(len(clip)), clip)
    clip_pcm = (np.repeat(clip44[:, None], 2, axis=1) * 32767).astype("<i2")
    starts_s = np.arange(30, total_s - 10, 60)
    starts = (starts_s * rate).astype(np.int64)
    # A long block and no idle frames keep an hour affordable; timing is computed exactly as live.
    preset = Preset("drift", driver="energy", renderer="static", block_ms=2000, driver_cpu_share=1.0,
                    context_ms=500, guard_ms=0, lookahead_ms=None, deadline_ms=1e9, jpeg_quality=50, h264_crf=30,
                    h264_preset="ultrafast", queue_frames=1)
    fake = ManualClock(0.0)
    pipeline = SessionPipeline(SessionConfig(width=64, idle_frames=False), resolve_avatar("default"),
                               clock=fake, preset=preset)
    fmt = AudioFormat(rate, 2, "pcm16")
    rng = np.random.default_rng(11)
    jaw = np.zeros(FrameClock(FPS).frame_count(total_s * SAMPLE_RATE) + 1, np.float32)
    position, wall = 0, time.perf_counter()

    def take(events):
        for e in events:
            if isinstance(e, FrameOut) and not e.idle:
                jaw[e.index] = e.mouth[0]

    while position < total_s * rate:
        n = min(int(rng.uniform(0.01, 1.0) * rate), total_s * rate - position)
        chunk = np.zeros((n, 2), "<i2")
        for s in starts[(starts + len(clip_pcm) > position) & (starts < position + n)]:
            lo, hi = max(s, position), min(s + len(clip_pcm), position + n)
            chunk[lo - position : hi - position] = clip_pcm[lo - s : hi - s]
        take(pipeline.audio(chunk.tobytes(), fmt, fake.now()))
        position += n
        fake.advance(n / rate)
    take(pipeline.flush())
    received = pipeline.session.audio_ticks
    envelope = _frame_rms(clip)
    lags = [_lag_frames(jaw, envelope, int(round(t * FPS))) for t in starts_s]
    return {
        "hours": hours, "input": "44.1 kHz stereo PCM16, chunks of 10 ms to 1 s", "seconds_to_simulate":
        round(time.perf_counter() - wall, 1), "samples_expected": total_s * SAMPLE_RATE, "samples_on_clock": received,
        "offset_first_minute_ms": lags[0] * 1000 / FPS, "offset_last_minute_ms": lags[-1] * 1000 / FPS,
        "offset_change_max_ms": (max(lags) - min(lags)) * 1000 / FPS, "frame_ms": 1000 / FPS,
        "holds": max(lags) - min(lags) <= 1 and received == total_s * SAMPLE_RATE,
    }


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    clock = FrameClock(FPS)
    n = clock.frame_count(len(audio))
    return np.array([np.sqrt(np.mean(audio[clock.frame_start(k) : clock.frame_start(k + 1)] ** 2)) for k in range(n)])


def _lag_frames(jaw: np.ndarray, envelope: np.ndarray, first: int, search: int = 12) -> int:
    """The shift (frames) of the mouth track against the audio envelope placed at frame `first`."""
    best, best_score = 0, -np.inf
    for lag in range(-search, search + 1):
        seg = jaw[first + lag : first + lag + len(envelope)]
        if len(seg) < len(envelope):
            continue
        score = float(np.corrcoef(seg, envelope)[0, 1])
        if score > best_score:
            best, best_score = lag, score
    return best


def bench_slow_client(url: str, server: ServerProcess, seconds: float) -> dict:
    """Server memory while one client streams in real time but reads one message per second."""
    import websockets

    audio = (np.clip(looped_speech(seconds), -1, 1) * 32767).astype("<i2")
    samples: list[float] = []

    async def run():
        async with websockets.connect(url, max_queue=1, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "preset": "low", "width": 512, "framing": "json"}))
            step = int(0.04 * SAMPLE_RATE)
            t0 = time.monotonic()

            async def slow_reader():
                while True:
                    await ws.recv()
                    await asyncio.sleep(1.0)

            reader = asyncio.create_task(slow_reader())
            for n, i in enumerate(range(0, len(audio), step)):
                await asyncio.sleep(max(0.0, t0 + n * 0.04 - time.monotonic()))
                await ws.send(_audio_message(n, audio[i : i + step]))
                if n % 25 == 0:
                    samples.append(server.rss_mib())
            reader.cancel()

    baseline = server.rss_mib()
    asyncio.run(run())
    half = len(samples) // 2
    return {"seconds": seconds, "rss_baseline_mib": round(baseline, 1), "rss_max_mib": round(max(samples), 1),
            "rss_growth_mib": round(max(samples) - baseline, 1),
            "rss_growth_second_half_mib": round(max(samples[half:]) - max(samples[:half]), 1),
            "holds": max(samples[half:]) - max(samples[:half]) < 20.0}


@dataclass
class ThrottledResult:
    """What a client reading at a fixed bit rate saw: per frame (arrival s from the first chunk
    sent, frame index, bytes), the quality statuses, the final stats and when `end` was sent."""

    frames: list[tuple[float, int, int]] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    end_sent_s: float = 0.0
    ended_s: float | None = None
    errors: list[str] = field(default_factory=list)


async def throttled_client(url: str, audio: np.ndarray, kbps: float = THROTTLED_KBPS, preset: str = "low",
                           width: int = SIZE_PX, headers: dict | None = None) -> ThrottledResult:
    """Stream float32 16 kHz `audio` in real time (20 ms binary chunks) to the server at `url`
    through a link that carries `kbps` kilobits a second back (lipstream.bench.link), and record
    what arrives."""
    import websockets

    from lipstream.bench.link import ThrottledLink

    result = ThrottledResult()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    t0 = time.monotonic()
    async with ThrottledLink(port, kbps * 1000 / 8) as link, websockets.connect(
            f"ws://127.0.0.1:{link.port}/ws", max_size=None, compression=None, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "start", "preset": preset, "renderer": "warp", "width": width,
                                  "fps": FPS, "framing": "binary"}))

        async def read() -> None:
            try:
                async for message in ws:
                    now = time.monotonic()
                    if isinstance(message, bytes):
                        if message[0] == KIND_FRAME_OUT and not message[2] & 0x02:  # speech frames, not idle ones
                            result.frames.append((now - t0, int.from_bytes(message[8:12], "little"), len(message)))
                    else:
                        msg = json.loads(message)
                        if msg["type"] == "error":
                            result.errors.append(f"{msg['code']}: {msg['message']}")
                        elif msg.get("event") == "quality":
                            result.statuses.append({**msg, "at_s": round(now - t0, 2)})
                        elif msg.get("event") == "ended":
                            result.stats, result.ended_s = msg["stats"], now - t0
            except websockets.ConnectionClosed:
                pass

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        await send_paced(ws, pcm, CHUNK_S, _audio_message)
        result.end_sent_s = time.monotonic() - t0
        await ws.send(json.dumps({"type": "end"}))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 120)
    return result


def throttled_summary(result: ThrottledResult, audio_s: float) -> dict:
    """Frames a second, gaps and lag behind the audio (s) of a ThrottledResult (the session makes
    frames of silence too: one real-time turn, idle frames on)."""
    times = np.array([t for t, _, _ in result.frames])
    lag = np.array([t - (k + 1) / FPS for t, k, _ in result.frames])  # arrival after its audio was sent
    per_second = np.bincount(times.astype(int), minlength=int(audio_s)) if len(times) else np.zeros(1, int)
    steady = per_second[3 : int(audio_s)]  # after the first seconds' stepping, until the audio ends
    half = len(lag) // 2
    return {
        "frames_received": len(times), "frames_of_audio": FrameClock(FPS).frame_count(int(audio_s * SAMPLE_RATE)),
        "fps_received_min_per_second_after_3s": int(steady.min()) if len(steady) else None,
        "fps_received_mean_after_3s": round(float(steady.mean()), 2) if len(steady) else None,
        "longest_gap_s": round(float(np.diff(times).max()), 3) if len(times) > 1 else None,
        "lag_s_first_half_p50": round(float(np.median(lag[:half])), 3) if half else None,
        "lag_s_second_half_p50": round(float(np.median(lag[half:])), 3) if half else None,
        "lag_s_max": round(float(lag.max()), 3) if len(lag) else None,
        "kbps_received": round(sum(n for _, _, n in result.frames) * 8 / 1000 / max(times.max(), 1e-9), 1)
        if len(times) else None,
        "ended_after_end_sent_s": None if result.ended_s is None else round(result.ended_s - result.end_sent_s, 2),
        "quality_steps": [{k: s.get(k) for k in ("at_s", "direction", "level", "jpegQuality", "scale", "fps",
                                                 "drainKbps", "queueMs")} for s in result.statuses],
        "final_stats": {k: result.stats.get(k) for k in ("framesSent", "framesDropped", "droppedByReason",
                                                          "framesThinned", "quality")},
        "errors": result.errors[:5],
    }


def metric_lines(http: str, prefixes: tuple[str, ...]) -> list[str]:
    """The /metrics lines that start with one of `prefixes` (comments left out)."""
    import httpx

    text = httpx.get(f"{http}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(prefixes)]


def bench_throttled(server: ServerProcess, seconds: float, kbps: float = THROTTLED_KBPS) -> dict:
    """The throttled client of the module docstring, `seconds` of speech at the default preset."""
    load_before = os.getloadavg()[0]
    audio = looped_speech(seconds)
    result = asyncio.run(throttled_client(server.url, audio, kbps))
    summary = throttled_summary(result, seconds)
    mean = summary["fps_received_mean_after_3s"]
    return {"kbps": kbps, "seconds": seconds, "preset": "low",
            "size": SIZE_PX, **summary,
            "metrics": metric_lines(server.http, ("lipstream_websocket_quality_steps_total", "lipstream_frames_thinned_total",
                                                  "lipstream_frames_dropped_total")),
            # the bar: at least 15 frames a second on average once stepped, no stall (no gap of
            # half a second), no backlog (frames lag the audio no more at the end than at first)
            "holds": bool(mean is not None and mean >= 15 and summary["longest_gap_s"] < 0.5
                          and summary["lag_s_second_half_p50"] <= summary["lag_s_first_half_p50"] + 0.25),
            "load_avg_1min_before": round(load_before, 2)}


def _fuzz_message(rng: random.Random) -> str | bytes:
    kinds = ["audio", "lipsync_audio", "flush", "switch", "end", "ping", "dance", "start"]
    values = [None, True, 0, -1, 2**40, 1e308, "", "x" * 300, "../../etc", "AAAA", "!!", [], {}, {"data": "AAAA"}]
    keys = ["type", "data", "sampleRate", "channels", "format", "avatar", "preset", "fps", "width", "renderer",
            "audioChunk", "faceModelId", "sessionId", "sequenceNumber", "id"]
    roll = rng.random()
    if roll < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
    if roll < 0.4:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 80)))
    obj = {k: rng.choice(values) for k in rng.sample(keys, rng.randrange(1, 6))}
    obj["type"] = rng.choice(kinds)
    if obj["type"] == "start":
        obj["width"] = "not a number"  # sessions are covered by the session limit, not this fuzz
    text = json.dumps(obj)
    return text[: rng.randrange(1, len(text) + 1)] if rng.random() < 0.2 else text


def bench_fuzz(url: str, server: ServerProcess, seconds: float, messages: int = FUZZ_MESSAGES,
               headers: dict | None = None) -> dict:
    """`messages` malformed messages from 4 reconnecting clients while `seconds`-long sessions
    stream one after another until the fuzzing is over. The fuzzing clients run in another
    process (sharing the streaming client's event loop would delay its own reads and sends) at
    the lowest CPU priority: an attacker's own CPU is not the server's on a real deployment, but
    here both share the machine."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    audio = looped_speech(seconds)
    started_s = time.monotonic()

    async def victims(fuzzing) -> list[ClientResult]:
        results = [await stream_client(url, audio, "ultra_low", headers=headers)]
        while not fuzzing.done():
            results.append(await stream_client(url, audio, "ultra_low", headers=headers))
        return results

    baseline = asyncio.run(stream_client(url, audio, "ultra_low", headers=headers))  # no fuzzing: the machine's own
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=os.nice,
                             initargs=(ATTACKER_NICE,)) as pool:
        fuzzing = pool.submit(_fuzz_clients, url, messages, headers)
        results = asyncio.run(victims(fuzzing))
        fuzzed = fuzzing.result()
    alive = server.process.poll() is None
    lost = sum(r.dropped for r in results)
    return {**fuzzed, "fuzz_seconds": round(time.monotonic() - started_s, 1), "server_alive": alive,
            "baseline_session": _summary([baseline]), "streaming_sessions": _summary(results), "frames_lost": lost,
            "holds": alive and lost == 0}


def _fuzz_clients(url: str, messages: int, headers: dict | None, clients: int = 4) -> dict:
    """Send `messages` fuzzed messages from `clients` reconnecting clients (a process of its own)."""
    import websockets

    sent = [0]
    closes: dict[int, int] = {}

    async def hostile(seed: int):
        rng = random.Random(seed)
        while sent[0] < messages:
            try:
                async with websockets.connect(url, max_size=None, additional_headers=headers) as ws:
                    drain = asyncio.create_task(_drain(ws))
                    try:
                        while sent[0] < messages:
                            await ws.send(_fuzz_message(rng))
                            sent[0] += 1
                            await asyncio.sleep(0)
                    finally:
                        drain.cancel()
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 0
                closes[code] = closes.get(code, 0) + 1

    async def run():
        await asyncio.gather(*(hostile(seed) for seed in range(clients)))

    asyncio.run(run())
    return {"messages": sent[0], "closes_by_code": closes}


async def _drain(ws) -> None:
    import websockets

    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass


def run_load_bench(out: Path | None = None, seconds: float = 20.0, max_sessions: int = 8,
                   capacity_preset: str = "ultra_low", drift_hours: float = 1.0,
                   parts: tuple[str, ...] = PARTS) -> dict:
    """The measurements above named in `parts` (all by default); writes the JSON to `out` if
    given and returns it."""
    results: dict = {"machine": machine_info(), "chunk_ms": CHUNK_S * 1000, "latency_bar_ms": LATENCY_BAR_MS}
    avatars = tempfile.mkdtemp(prefix="lipstream-bench-")
    with ServerProcess(max_sessions=max_sessions + 2, avatars_dir=avatars) as server:
        if "latency" in parts:
            results["latency_by_preset"] = bench_latency(server.url, seconds)
        if "first_frame" in parts:
            results["first_frame_by_preset"] = bench_first_frame(server.url)
        if "seed002" in parts:
            results["seed002"] = bench_seed002(server.url, seconds)
        if "capacity" in parts:
            results["capacity"] = bench_capacity(server.url, seconds, capacity_preset, max_sessions)
            results["capacity_no_drops"] = bench_capacity(server.url, seconds, "balanced", max_sessions, bar_ms=None)
        if "slow_client" in parts:
            results["slow_client"] = bench_slow_client(server.url, server, seconds)
        if "throttled" in parts:
            results["throttled"] = bench_throttled(server, seconds)
        if "fuzz" in parts:
            results["fuzz"] = bench_fuzz(server.url, server, seconds)
    if "cpu" in parts:
        results["cpu_per_session"] = bench_cpu(seconds)
    if "drift" in parts:
        results["drift"] = bench_drift(drift_hours)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(run_load_bench(Path(sys.argv[1]) if len(sys.argv) > 1 else None), indent=2))
