"""A slow client and a busy worker, on a manual clock: frames dropped oldest-first and past their
deadline (counted), audio reads paused while a worker has too much of a session's audio queued."""

import asyncio
import json

import numpy as np

from lipstream.server.connection import Connection
from lipstream.server.state import ServerSettings, ServerState
from lipstream.session import ManualClock
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.events import FrameOut
from lipstream.stream.pool import MAX_INFLIGHT_AUDIO_S, SessionHandle


class SlowSocket:
    """Takes what is sent; a test decides when the client reads."""

    def __init__(self):
        self.sent = []

    async def send_text(self, text):
        self.sent.append(json.loads(text))

    async def send_bytes(self, data):
        self.sent.append(data)


def frame(k: int, deadline_s: float) -> FrameOut:
    return FrameOut(k, 640 * k, 640, b"jpeg", True, False, ready_s=deadline_s - 0.4, deadline_s=deadline_s,
                    renderer="warp", mouth=np.zeros(4, np.float32))


def connection(clock):
    state = ServerState(ServerSettings(), pool=None, clock=clock)
    conn = Connection(SlowSocket(), state)
    conn.session_id = "s"
    return conn


def test_a_client_that_does_not_read_loses_the_oldest_frames_not_memory():
    clock = ManualClock()
    conn = connection(clock)
    conn.outbox.max_frames = 4
    conn._deliver([frame(k, clock.now() + 10) for k in range(10)])  # ten frames while the client reads none
    assert conn.outbox.frames == 4 and conn.stats.dropped["slow_client"] == 6
    assert [item.index for item in conn.outbox.items] == [6, 7, 8, 9]  # the newest are kept
    sent = conn.state.metrics.dropped.labels(conn.preset.name, "slow_client")._value.get()
    assert sent == 6


def test_frames_past_their_deadline_are_dropped_when_the_client_reads_again():
    clock = ManualClock()
    conn = connection(clock)

    async def drain():
        while conn.outbox.items:
            await conn._send_item(await conn.outbox.get(0))

    conn._deliver([frame(k, clock.now() + 0.1 * (k + 1)) for k in range(6)])
    clock.advance(0.35)  # the client stalled: frames 0-2 are stale now, 3-5 are not
    asyncio.run(drain())
    sent = [m for m in conn.ws.sent if isinstance(m, dict) and m["type"] == "response_video"]
    assert [m["frameIndex"] for m in sent] == [3, 4, 5]
    assert conn.stats.dropped["late"] == 3 and conn.stats.frames_sent == 3
    # latency from when each frame was ready to when it went out, on the same clock
    assert np.allclose(list(conn.stats.latencies_ms), [350.0, 250.0, 150.0])


class QueueWorker:
    """Stands in for a worker process: records commands, acknowledges when told to."""

    def __init__(self):
        self.sessions, self.sent = {}, []

    def send(self, message):
        self.sent.append(message)


def test_reads_pause_while_a_worker_holds_too_much_of_a_sessions_audio():
    async def main():
        worker = QueueWorker()
        handle = SessionHandle("s", worker, deliver=lambda events: None)
        fmt = AudioFormat(16000, 1, "pcm16")
        second = bytes(2 * 16000)
        for _ in range(int(MAX_INFLIGHT_AUDIO_S) + 1):  # a client sending faster than the worker takes it
            handle.audio(second, fmt, 0.0)
        waiting = asyncio.create_task(handle.wait_for_room())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # the receive loop would stop reading: TCP pushes back on the client
        handle._acked(1.0)  # the worker took a second of it
        await asyncio.wait_for(waiting, 1.0)
        assert len(worker.sent) == int(MAX_INFLIGHT_AUDIO_S) + 1
        handle.audio(second, fmt, 0.0)
        blocked = asyncio.create_task(handle.wait_for_room())
        await asyncio.sleep(0.01)
        assert not blocked.done()
        handle.close()  # a closed session never leaves the reader waiting
        await asyncio.wait_for(blocked, 1.0)

    asyncio.run(main())


def test_time_to_first_frame_is_counted_once_per_turn_on_the_servers_clock():
    clock = ManualClock()
    conn = connection(clock)
    first = frame(0, clock.now() + 10)
    first.turn_arrived_s = clock.now() - 0.12  # the turn's first chunk came 120 ms before its first frame
    conn._deliver([first, frame(1, clock.now() + 10)])

    async def drain():
        while conn.outbox.items:
            await conn._send_item(await conn.outbox.get(0))

    asyncio.run(drain())
    assert np.allclose(list(conn.stats.first_frames_ms), [120.0])
    assert conn.stats.snapshot()["firstFrameMs"] == {"last": 120.0, "p50": 120.0, "p95": 120.0}
    histogram = conn.state.metrics.first_frame.labels(conn.preset.name)
    counts = [b.get() for b in histogram._buckets]  # per bucket, not cumulative: 0.1 < 0.12 <= 0.125
    assert np.isclose(histogram._sum.get(), 0.12) and sum(counts) == 1 and counts[3] == 1


def test_a_worker_sends_each_frame_of_a_block_as_soon_as_it_is_rendered(default_avatar, speech):
    """A 100 ms chunk makes a block of frames; the worker hands them to the server one message per
    frame, rendering the next only after the previous is sent (the audio acknowledged with the first)."""
    from lipstream.stream.pool import _Host
    from lipstream.stream.session import SessionConfig, SessionPipeline

    class Pipe:
        def __init__(self):
            self.sent, self.waiting = [], False

        def send(self, message):
            self.sent.append(message)

        def poll(self, timeout=None):
            return self.waiting

    clock = ManualClock(0.0)
    pipeline = SessionPipeline(SessionConfig(preset="low", width=64, idle_frames=False, silent_frames=True),
                               default_avatar, clock=clock)
    renders = []
    render = pipeline.session.chain.render
    pipeline.session.chain.render = lambda *args, **kw: renders.append(len(pipe.sent)) or render(*args, **kw)
    pipe = Pipe()
    host = _Host(pipe, store=None, pipeline_cls=SessionPipeline)
    host.sessions["s"] = pipeline
    fmt = AudioFormat(16000, 1, "pcm16")
    pcm = (speech[8000:16000] * 32767).astype("<i2")
    host._handle_batch([("audio", "s", pcm.tobytes(), fmt, clock.now())])  # 500 ms at once: a block of frames
    frames = [[e for e in events if isinstance(e, FrameOut)] for _, _, events, _ in pipe.sent]
    assert sum(map(len, frames)) >= 5 and all(len(f) <= 1 for f in frames)
    assert renders == sorted(renders) and len(set(renders)) == len(renders)  # one render per message sent
    assert [acked for *_, acked in pipe.sent] == [0.5] + [0.0] * (len(pipe.sent) - 1)
    # with commands waiting, the worker sends one frame and takes them first: a turn whose next
    # chunk is in the pipe must not end (each poll checks for a quiet turn) while it renders the rest
    pipe.sent.clear()
    pipe.waiting = True
    clock.advance(0.5)
    host._handle_batch([("audio", "s", pcm.tobytes(), fmt, clock.now())])
    clock.advance(0.4)  # past the chunk's 0.5 s and the 0.25 s grace, counted from when it was taken
    assert sum(isinstance(e, FrameOut) for _, _, events, _ in pipe.sent for e in events) == 1
    pipe.waiting = False
    host._handle_batch([("audio", "s", pcm.tobytes(), fmt, clock.now())])
    events = [e for _, _, batch, _ in pipe.sent for e in batch]
    assert sum(isinstance(e, FrameOut) for e in events) >= 20
    assert not any(getattr(e, "event", None) == "turn_ended" for e in events)
