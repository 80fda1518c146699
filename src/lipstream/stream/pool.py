"""Session pipelines in worker processes, so sessions use every core (the GIL would not).

The server's event loop only does I/O: it sends each session's commands (audio, flush,
switch, ...) to the worker process that hosts the session and gets its events back through a
pipe. A worker serves its sessions in turn; chunks that queued up while it was busy are driven
together (one driver run for all of them), so under load the cost per frame falls instead of a
backlog growing. Each worker also wakes on its sessions' timers (idle frames, end of turn).

Threads on the server side move the pickled messages (a sender and a reader per worker), so
the event loop never blocks on a pipe; the reader hands events to the loop thread-safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.errors import BadAudioError, InternalError, LipstreamError, error_class
from lipstream.session.clock import RealClock
from lipstream.store import DEFAULT_CACHE_MIB, AvatarStore
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.events import Event, Failure, Status

log = logging.getLogger(__name__)

# Workers are one per core, so each runs its maths on one thread: OpenBLAS' default thread pool
# spins on every core and, measured here, doubled the CPU a session costs for no gain in speed.
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MAX_INFLIGHT_AUDIO_S = 2.0  # audio a session may have queued at its worker before reads pause
MAX_PENDING_COMMANDS = 16  # other commands a session may have waiting to go to its worker
MAX_BATCH_MESSAGES = 256
WARM_UP_FPS = 25.0
WORKER_START_TIMEOUT_S = 120.0
WORKER_STOP_S = 1.5
OPEN_TIMEOUT_S = 30.0  # a session not started by then is refused (the worker is overloaded)

Deliver = Callable[[list[Event]], None]


@dataclass
class SessionHandle:
    """The server side of one session hosted by a worker process.

    Two bounds keep what a session can queue at its worker small, whatever its client sends:
    at most MAX_INFLIGHT_AUDIO_S of audio not yet processed, and at most MAX_PENDING_COMMANDS
    other commands (flush, switch, ...) not yet written to the worker. Past either, the server
    stops reading the session's socket (`wait_for_room`) until the worker catches up.
    """

    session_id: str
    worker: _Worker
    deliver: Deliver
    info: dict = field(default_factory=dict)
    inflight_s: float = 0.0
    closed: bool = False
    commands_sent: int = 0  # counted on the event loop's thread
    commands_written: int = 0  # counted on the worker's send thread
    _room: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self):
        self._room.set()

    @property
    def pending_commands(self) -> int:
        return self.commands_sent - self.commands_written

    def audio(self, data: bytes, fmt: AudioFormat, arrived_s: float) -> None:
        self.inflight_s += len(data) / max(fmt.bytes_per_frame, 1) / max(fmt.sample_rate, 1)
        self._update_room()
        self.worker.send(("audio", self.session_id, data, fmt, arrived_s))

    async def wait_for_room(self) -> None:
        """Wait while too much of this session is queued at its worker (backpressure)."""
        while not self._room.is_set() and not self.closed:
            await self._room.wait()

    def flush(self) -> None:
        self._command(("flush", self.session_id))

    def switch(self, renderer: str | None, driver: str | None, avatar: str | None = None) -> None:
        self._command(("switch", self.session_id, renderer, driver, avatar))

    def request_keyframe(self) -> None:
        self._command(("keyframe", self.session_id))

    def set_level(self, level) -> None:
        """Frames go out at this `OutputLevel` from the next one the worker makes."""
        self._command(("level", self.session_id, level))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._room.set()
            self.worker.send(("close", self.session_id))
            self.worker.sessions.pop(self.session_id, None)

    def _command(self, message: tuple) -> None:
        self.commands_sent += 1
        self._update_room()
        self.worker.send(message, self)

    def _acked(self, seconds: float) -> None:
        self.inflight_s = max(0.0, self.inflight_s - seconds)
        self._update_room()

    def _update_room(self) -> None:
        if self.closed or (self.inflight_s <= MAX_INFLIGHT_AUDIO_S and self.pending_commands <= MAX_PENDING_COMMANDS):
            self._room.set()
        else:
            self._room.clear()


class _Worker:
    """One worker process and the two threads that talk to it."""

    def __init__(self, pool: WorkerPool, index: int):
        self.pool = pool
        self.index = index
        self.sessions: dict[str, SessionHandle] = {}
        self.pending_opens: dict[str, asyncio.Future] = {}
        self.pending_preloads: dict[str, asyncio.Future] = {}
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, pool.avatars, pool.avatar_cache_mib, index == 0), daemon=True,
                                   name=f"lipstream-worker-{index}")
        self.process.start()
        child.close()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.alive = True

    def wait_ready(self) -> None:
        if not self.conn.poll(WORKER_START_TIMEOUT_S):
            raise InternalError(f"worker {self.index} did not start in {WORKER_START_TIMEOUT_S:g} s")
        try:
            self.conn.recv()
        except EOFError:
            raise InternalError(f"worker {self.index} exited while starting (code {self.process.exitcode}); "
                               "a script that starts the server needs an `if __name__ == '__main__':` guard") from None
        threading.Thread(target=self._send_loop, daemon=True, name=f"lipstream-send-{self.index}").start()
        threading.Thread(target=self._read_loop, daemon=True, name=f"lipstream-read-{self.index}").start()

    def send(self, message: tuple, handle: SessionHandle | None = None) -> None:
        """Queue a message for the process; `handle` is told when it is written (its backlog)."""
        self._outbox.put((message, handle))

    def stop(self, deadline: float) -> None:
        """Ask the process to stop; kill it if it is still running at `deadline` (monotonic s)."""
        self.alive = False
        self._outbox.put(None)
        self.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():
            self.process.kill()

    def _send_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            message, handle = item
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return
            if handle is not None:
                handle.commands_written += 1
                if handle.pending_commands == MAX_PENDING_COMMANDS:  # it may be waiting for room
                    self._call_soon(handle._update_room)
        try:
            self.conn.send(("stop",))
        except (OSError, ValueError):
            pass

    def _read_loop(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._call_soon(self.pool._worker_exited, self)
                return
            self._call_soon(self._dispatch, message)

    def _call_soon(self, callback, *args) -> None:
        try:
            self.pool.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass

    def _dispatch(self, message: tuple) -> None:
        kind, session_id, *rest = message
        if kind in ("opened", "preloaded"):
            pending = self.pending_opens if kind == "opened" else self.pending_preloads
            future = pending.pop(session_id, None)
            if future and not future.done():
                future.set_result(rest[0])
            elif not isinstance(rest[0], Failure):  # opened after the server gave up waiting: close it
                self.send(("close", session_id))
            return
        handle = self.sessions.get(session_id)
        if kind == "events" and handle is not None:
            events, acked_s = rest
            handle._acked(acked_s)
            handle.deliver(events)
            if any(isinstance(e, Failure) and e.fatal for e in events):
                self.sessions.pop(session_id, None)


class WorkerPool:
    """`workers` processes hosting SessionPipelines; open sessions from the event loop.

    avatars: a folder of packages or a URI prefix (lipstream.store.AvatarStore); each worker
    holds the avatars it loaded within avatar_cache_mib."""

    def __init__(self, workers: int | None = None, avatars: Path | str | None = None,
                 avatar_cache_mib: float = DEFAULT_CACHE_MIB):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.avatars = avatars
        self.avatar_cache_mib = avatar_cache_mib
        self.workers: list[_Worker] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False

    def start(self) -> None:
        """Start the processes and wait until each has imported everything (seconds). The first
        one also prepares the bundled `default` avatar if the cache lacks it, before the others
        start, so they never prepare it at the same time."""
        self.loop = asyncio.get_running_loop()
        for name in SINGLE_THREAD_ENV:  # read by the workers' numpy when they start
            os.environ.setdefault(name, "1")
        self.workers = [_Worker(self, 0)]
        self.workers[0].wait_ready()
        self.workers += [_Worker(self, i) for i in range(1, self.size)]
        for worker in self.workers[1:]:
            worker.wait_ready()

    def stop(self) -> None:
        """Stop every worker within WORKER_STOP_S (they stop at once unless mid-computation)."""
        self.stopping = True
        deadline = time.monotonic() + WORKER_STOP_S
        for worker in self.workers:
            worker.stop(deadline)
        self.workers = []

    @property
    def alive(self) -> int:
        return sum(w.alive and w.process.is_alive() for w in self.workers)

    async def open(self, session_id: str, config, deliver: Deliver) -> SessionHandle:
        """Start a session on the least busy worker; raises the pipeline's LipstreamError if it
        can't start (unknown avatar, bad size, ...)."""
        alive = [w for w in self.workers if w.alive]
        if not alive:
            raise InternalError("no worker process is running; restart the server")
        worker = min(alive, key=lambda w: len(w.sessions) + len(w.pending_opens))
        future = self.loop.create_future()
        worker.pending_opens[session_id] = future
        handle = SessionHandle(session_id, worker, deliver)
        worker.sessions[session_id] = handle
        worker.send(("open", session_id, config))
        try:
            result = await asyncio.wait_for(future, OPEN_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:  # the slot must not stay taken
            worker.pending_opens.pop(session_id, None)
            handle.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise LipstreamError(f"the server could not start the session in {OPEN_TIMEOUT_S:g} s (overloaded); "
                                 "try again later") from None
        if isinstance(result, Failure):
            worker.sessions.pop(session_id, None)
            raise _as_error(result)
        handle.info = result
        return handle

    async def preload(self, names: list[str]) -> list[dict]:
        """Have every worker fetch and hold these avatars now; per avatar, ok only if every worker
        holds it (the first error otherwise)."""
        replies = []
        for worker in [w for w in self.workers if w.alive]:
            request = os.urandom(8).hex()
            worker.pending_preloads[request] = future = self.loop.create_future()
            worker.send(("preload", request, list(names)))
            replies.append(future)
        results = await asyncio.gather(*replies)
        if not results:
            raise InternalError("no worker process is running; restart the server")
        return [next((r[i] for r in results if not r[i]["ok"]), results[0][i]) for i in range(len(names))]

    def _worker_exited(self, worker: _Worker) -> None:
        if not worker.alive or self.stopping:
            return
        worker.alive = False
        log.error("worker %d exited (code %s); its sessions end", worker.index, worker.process.exitcode)
        failure = Failure("InternalError", "the worker process serving this session stopped; start a new session", True)
        for future in worker.pending_opens.values():
            if not future.done():
                future.set_result(failure)
        for future in worker.pending_preloads.values():
            if not future.done():
                future.cancel()
        for handle in list(worker.sessions.values()):
            handle.closed = True
            handle._room.set()
            handle.deliver([failure])
        worker.sessions.clear()
        self.workers[self.workers.index(worker)] = replacement = _Worker(self, worker.index)
        self.loop.run_in_executor(None, replacement.wait_ready)


def _as_error(failure: Failure) -> LipstreamError:
    return error_class(failure.kind)(failure.message)


# -- the worker process ----------------------------------------------------------------------


def worker_main(conn, avatars: Path | str | None, avatar_cache_mib: float, warm_default: bool) -> None:
    """Entry point of a worker process: serve session commands until told to stop."""
    import cv2

    from lipstream.stream.session import SessionPipeline  # heavy imports happen in the worker

    # The server owns the workers' lifetime: a Ctrl+C or SIGTERM sent to the whole process group
    # must not kill them mid-frame (or print their tracebacks); they stop on "stop" or when the
    # server's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)
    host = _Host(conn, AvatarStore(avatars, avatar_cache_mib), SessionPipeline)
    if warm_default:
        with contextlib.suppress(LipstreamError):
            host._avatar("default")
    _warm_up_drivers()
    conn.send(("ready", os.getpid()))
    host.run()


def _warm_up_drivers() -> None:
    """Run every driver once on a second of speech, so that models they load on first use
    (the VAD's, the phoneme decoder's) are not loaded while a session's first frames wait."""
    from lipstream.audio.io import load_audio
    from lipstream.avatar.resolve import bundled_asset
    from lipstream.motion.drivers import DRIVER_NAMES, get_driver

    speech = load_audio(bundled_asset("speech.wav"))[:SAMPLE_RATE]
    for name in DRIVER_NAMES:
        try:
            get_driver(name, WARM_UP_FPS).drive(speech)
        except Exception:  # a driver that can't run here fails again, visibly, when a session asks for it
            log.warning("warming up driver %s failed", name, exc_info=True)


class _Host:
    """The worker's sessions and its loop: batches of commands, then timers."""

    def __init__(self, conn, store: AvatarStore, pipeline_cls):
        self.conn = conn
        self.store = store
        self.pipeline_cls = pipeline_cls
        self.clock = RealClock()  # the sessions' clock: their timers are read from it
        self.sessions: dict = {}

    def run(self) -> None:
        while True:
            wakeups = [w for s in self.sessions.values() if (w := s.next_wakeup()) is not None]
            timeout = max(0.0, min(wakeups) - self.clock.now()) if wakeups else None
            if self.conn.poll(timeout):
                try:
                    batch = [self.conn.recv()]
                    while len(batch) < MAX_BATCH_MESSAGES and self.conn.poll(0):
                        batch.append(self.conn.recv())
                except EOFError:  # the server is gone
                    return
                if not self._handle_batch(batch):
                    return
            if self.conn.poll(0):  # commands came in while this batch was served: take them before the
                continue           # timers, so a busy worker never ends a turn whose audio is queued
            for session_id in list(self.sessions):
                self._send_events(session_id, self._call(session_id, "tick"))

    def _handle_batch(self, batch: list[tuple]) -> bool:
        """Apply commands in order; audio is taken at once and frames made once per session."""
        dirty: dict[str, tuple[list, float]] = {}
        for message in batch:
            kind, *args = message
            if kind == "stop":
                return False
            if kind == "preload":
                request, names = args
                self.conn.send(("preloaded", request, [r.to_dict() for r in self.store.preload(names)]))
                continue
            session_id = args[0]
            if kind == "audio":
                events, acked = dirty.setdefault(session_id, ([], 0.0))
                _, data, fmt, arrived = args
                seconds = len(data) / max(fmt.bytes_per_frame, 1) / max(fmt.sample_rate, 1)
                dirty[session_id] = (events, acked + seconds)
                events += self._call(session_id, "add_audio", data, fmt, arrived, fatal=False)
                continue
            self._process_dirty(dirty, only=session_id)
            if kind == "open":
                self._open(session_id, args[1])
            elif kind == "flush":  # "flushed" tells the server every frame of the turn is out
                self._send_events(session_id, self._call(session_id, "flush") + [Status("flushed", {})])
            elif kind == "switch":
                self._send_events(session_id, self._switch(session_id, *args[1:]))
            elif kind == "keyframe":
                self._call(session_id, "request_keyframe")
            elif kind == "level":
                self._call(session_id, "set_level", args[1])
            elif kind == "close":
                self.sessions.pop(session_id, None)
        self._process_dirty(dirty)
        return True

    def _process_dirty(self, dirty: dict, only: str | None = None) -> None:
        ids = ([only] if only in dirty else []) if only is not None else list(dirty)
        for session_id in ids:
            events, acked = dirty.pop(session_id)
            if session_id in self.sessions:  # frame by frame: each is sent as soon as it is rendered
                events += self._call(session_id, "process", 1)
            self.conn.send(("events", session_id, events, acked))
            # the rest until commands wait: each poll also checks for a quiet turn, and one whose
            # audio came in while this worker rendered must not end (the next batch goes on with it)
            while session_id in self.sessions and not self.conn.poll(0) and (more := self._call(session_id, "process", 1)):
                self.conn.send(("events", session_id, more, 0.0))

    def _open(self, session_id: str, config) -> None:
        try:
            pipeline = self.pipeline_cls(config, self._avatar(config.avatar), clock=self.clock)
        except LipstreamError as exc:
            self.conn.send(("opened", session_id, Failure.from_exception(exc, True)))
            return
        except Exception as exc:  # a bug must not take the worker down with it
            log.exception("opening session %s failed", session_id)
            failure = Failure("InternalError", f"could not start the session: {exc}", True)
            self.conn.send(("opened", session_id, failure))
            return
        self.sessions[session_id] = pipeline
        self.conn.send(("opened", session_id, pipeline.info()))

    def _switch(self, session_id: str, renderer: str | None, driver: str | None, avatar: str | None) -> list:
        """A switch; an avatar is loaded here first (from the store: held ones at once), and one
        that can't be is refused with the session going on."""
        try:
            package = self._avatar(avatar) if avatar else None
        except LipstreamError as exc:
            return [Failure.from_exception(exc, False)]
        return self._call(session_id, "switch", renderer, driver, package, fatal=False)

    def _avatar(self, name: str):
        """The avatar package, from the store (loaded again if it was prepared anew)."""
        return self.store.get(name)

    def _send_events(self, session_id: str, events: list) -> None:
        if events:
            self.conn.send(("events", session_id, events, 0.0))

    def _call(self, session_id: str, method: str, *args, fatal: bool = True) -> list:
        """Run pipeline.method(*args) -> events; errors become Failure events (fatal ones end
        the session, as does any error that is not the client's)."""
        pipeline = self.sessions.get(session_id)
        if pipeline is None:
            return []
        try:
            return getattr(pipeline, method)(*args) or []
        except BadAudioError as exc:  # a bad chunk is refused; the stream goes on
            return [Failure.from_exception(exc, False)]
        except LipstreamError as exc:
            if not fatal:
                return [Failure.from_exception(exc, False)]
            self.sessions.pop(session_id, None)
            return [Failure.from_exception(exc, True)]
        except Exception as exc:
            log.exception("session %s failed", session_id)
            self.sessions.pop(session_id, None)
            return [Failure("InternalError", f"the session failed: {exc}", True)]
