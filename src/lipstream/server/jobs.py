"""Background jobs of the HTTP API: preparing an uploaded avatar, rendering a file to mp4.

Each job runs in its own process (a prepare or a render is seconds of CPU that must not hold
the server's event loop or GIL) and reports progress through a pipe. One job runs at a time,
a few more may wait; a job is stopped at its time limit or when cancelled, and nothing it
half-wrote is left behind; finished jobs are kept for a while so clients can poll and download.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lipstream.server.redact import public_message

log = logging.getLogger(__name__)

MAX_WAITING_JOBS = 4
KEPT_JOBS = 32
JOB_TTL_S = 3600.0
DEFAULT_JOB_TIMEOUT_S = 600.0
FINISHED_STATES = ("done", "failed", "cancelled")
POLL_S = 0.2  # how often a running job's thread checks for a cancel or its time limit
STOP_GRACE_S = 1.0  # SIGTERM, then SIGKILL after this

IMAGE_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"))
VIDEO_MAGIC = ((b"\x1a\x45\xdf\xa3", ".mkv"),)


def sniff_media(head: bytes) -> str | None:
    """The file suffix a photo or video upload should have, from its first bytes; None if neither."""
    for magic, suffix in IMAGE_MAGIC + VIDEO_MAGIC:
        if head.startswith(magic):
            return suffix
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[4:8] == b"ftyp":
        return ".mp4"
    return None


@dataclass
class Job:
    """A job's public state: queued, running, done, failed or cancelled; progress is (done, total)."""

    id: str
    kind: str
    state: str = "queued"
    done: int = 0
    total: int = 0
    error: str | None = None
    error_kind: str | None = None
    result: dict = field(default_factory=dict)
    created_s: float = field(default_factory=time.time)
    work_dir: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def public(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error, "errorKind": self.error_kind,
                "result": {k: v for k, v in self.result.items() if k != "path"}}


class JobRunner:
    """Queue of jobs run one at a time in child processes, each stopped after `timeout_s`.

    Uploads and results live in per-job folders under one temporary root that is removed when
    the runner stops; a job's folder goes as soon as nothing needs it (at once for a prepare or a
    job that did not finish, when the result is evicted for a render).
    """

    def __init__(self, timeout_s: float = DEFAULT_JOB_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._args: dict[str, dict] = {}
        self._running: asyncio.Task | None = None  # the running job, until it is cleaned up
        self._root: Path | None = None

    def start(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="lipstream-jobs-"))
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def cancel_all(self) -> None:
        """Tell every job to stop (the running one's process is stopped within STOP_GRACE_S)."""
        for job in self.jobs.values():
            job.cancel.set()

    async def stop(self) -> None:
        """Stop the jobs and remove every job's files."""
        self.cancel_all()
        if self._running is not None:  # its thread returns once the process is gone, then it is cleaned
            await asyncio.wait({self._running}, timeout=STOP_GRACE_S + 2 * POLL_S)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    @property
    def healthy(self) -> bool:
        """False once the loop that runs the jobs has stopped (it should never stop by itself)."""
        return self._task is not None and not self._task.done()

    def waiting(self) -> int:
        return sum(not j.finished for j in self.jobs.values())

    def pending(self, kind: str, key: str, value) -> bool:
        """True if a queued or running job of `kind` has args[key] == value."""
        return any(not job.finished and job.kind == kind and self._args[job.id].get(key) == value
                   for job in self.jobs.values())

    def submit(self, kind: str, args: dict, work_dir: Path) -> Job:
        """Queue a job (the caller checked `waiting()` against MAX_WAITING_JOBS)."""
        self._evict()
        job = Job(uuid.uuid4().hex[:16], kind, work_dir=work_dir)
        self.jobs[job.id] = job
        self._args[job.id] = args
        self._queue.put_nowait((job, args))
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (its process is stopped); None if there is no such job."""
        job = self.jobs.get(job_id)
        if job is not None and not job.finished:
            job.cancel.set()
            if job.state == "queued":
                _finish(job, "cancelled", "Cancelled", "cancelled before it started")
                _cleanup(job, self._args[job.id])
        return job

    def new_work_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="job-", dir=self._root))

    async def _run(self) -> None:
        while True:
            job, args = await self._queue.get()
            if job.finished:  # cancelled while it waited
                _cleanup(job, args)
                continue
            job.state = "running"
            self._running = asyncio.create_task(self._run_one(job, args))
            await asyncio.shield(self._running)

    async def _run_one(self, job: Job, args: dict) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, _run_in_child, job, args, self.timeout_s)
        except Exception as exc:  # the runner must outlive any one job
            log.exception("job %s failed to run", job.id)
            _finish(job, "failed", "InternalError", f"the job could not be run ({type(exc).__name__})")
        finally:
            _cleanup(job, args)

    def _evict(self) -> None:
        now = time.time()
        finished = sorted((j for j in self.jobs.values() if j.finished), key=lambda j: j.created_s)
        excess = max(0, len(self.jobs) - KEPT_JOBS)
        old = {j.id for j in finished if now - j.created_s > JOB_TTL_S} | {j.id for j in finished[:excess]}
        for job_id in old:
            job = self.jobs.pop(job_id)
            self._args.pop(job_id, None)
            if job.work_dir:
                shutil.rmtree(job.work_dir, ignore_errors=True)


def _finish(job: Job, state: str, error_kind: str | None = None, error: str | None = None) -> None:
    job.error_kind, job.error, job.state = error_kind, error, state


def _cleanup(job: Job, args: dict) -> None:
    """Remove what a finished job leaves: its upload (kept only for a render's result) and, for a
    prepare that did not finish, the half-built package beside the avatars (prepare's temporary
    `.NAME.*` folder, which a killed process could not remove itself)."""
    if job.kind == "prepare" and job.state != "done":
        target: Path = args["target"]
        for leftover in target.parent.glob(f".{glob.escape(target.name)}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
    if job.work_dir and not (job.kind == "render" and job.state == "done"):
        shutil.rmtree(job.work_dir, ignore_errors=True)


def _run_in_child(job: Job, args: dict, timeout_s: float) -> None:
    """Run the job in a fresh process, updating `job` from its progress messages (a thread);
    the process is stopped when the job is cancelled or runs past `timeout_s`."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(child, job.kind, args), daemon=True)
    process.start()
    child.close()
    deadline = time.monotonic() + timeout_s
    outcome = stopped = None
    while True:
        if job.cancel.is_set():
            stopped = ("cancelled", "Cancelled", "cancelled")
        elif time.monotonic() > deadline:
            stopped = ("failed", "TimedOut", f"the job ran past its time limit of {timeout_s:g} s")
        if stopped:
            _stop_process(process)
            break
        try:
            if not parent.poll(POLL_S):
                continue
            kind, *rest = parent.recv()
        except (EOFError, OSError):
            break
        if kind == "progress":
            job.done, job.total = rest
        else:
            outcome = (kind, rest)
    parent.close()
    process.join()  # the job reads as finished only once its process is gone
    if stopped:
        _finish(job, *stopped)
    elif outcome is None:
        _finish(job, "failed", "InternalError", f"the job process stopped (exit code {process.exitcode})")
    elif outcome[0] == "done":
        job.result, job.state = outcome[1][0], "done"
    else:
        _finish(job, "failed", outcome[1][0], public_message(outcome[1][1]))


def _stop_process(process) -> None:
    process.terminate()
    process.join(STOP_GRACE_S)
    if process.is_alive():
        process.kill()


def _child_main(conn, kind: str, args: dict) -> None:
    import signal

    from lipstream.errors import LipstreamError

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C stops the server, which ends the job

    def progress(done: int, total: int) -> None:
        conn.send(("progress", done, total))

    try:
        result = _prepare_job(args, progress) if kind == "prepare" else _render_job(args, progress)
        conn.send(("done", result))
    except LipstreamError as exc:
        conn.send(("failed", type(exc).__name__, str(exc)))
    except Exception as exc:  # reported to the client, never raised into the server
        log.exception("%s job failed", kind)
        conn.send(("failed", "InternalError", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _prepare_job(args: dict, progress) -> dict:
    from lipstream.avatar.package import load_package
    from lipstream.avatar.prepare import prepare

    out = prepare(args["source"], args["target"], fps=args["fps"], name=args["name"], progress=progress,
                  limits=args["limits"])
    package = load_package(out)
    return {"name": args["name"], "kind": package.kind, "width": package.size[0], "height": package.size[1],
            "fps": package.fps, "frames": package.frame_count}


def _render_job(args: dict, progress) -> dict:
    from lipstream.audio.io import audio_duration_s
    from lipstream.avatar.resolve import resolve_avatar
    from lipstream.errors import BadAudioError
    from lipstream.offline import RenderOptions, render_file
    from lipstream.select.history import record_render

    claimed_s = audio_duration_s(args["audio"])  # from the header: refused before anything is decoded
    if claimed_s is not None and claimed_s > args["max_audio_s"]:
        raise BadAudioError(f"the audio is {claimed_s / 60:.1f} min long; this server renders at most "
                            f"{args['max_audio_s'] / 60:g} min: split it into shorter files")
    avatar = resolve_avatar(args["avatar"], avatars_dir=args["avatars_dir"])
    options = RenderOptions(renderer=args["renderer"], driver=args["driver"])
    with record_render(args["renderer"], "job") as record:
        summary = render_file(avatar, args["audio"], args["out"], options, progress=progress)
        record(summary.renderer)
    return {"path": str(summary.path), "frames": summary.frames, "durationS": round(summary.duration_s, 3),
            "fps": summary.fps, "renderer": summary.renderer, "driver": summary.driver}
