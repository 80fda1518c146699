"""Background jobs of the HTTP API: preparing an uploaded avatar, rendering a file to mp4.

Each job runs in its own process (a prepare or a render is seconds of CPU that must not hold
the server's event loop or GIL) and reports progress through a pipe. One job runs at a time,
a few more may wait; finished jobs are kept for a while so clients can poll and download.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MAX_WAITING_JOBS = 4
KEPT_JOBS = 32
JOB_TTL_S = 3600.0

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
    """A job's public state: queued, running, done or failed; progress is (done, total)."""

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

    def public(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error, "errorKind": self.error_kind,
                "result": {k: v for k, v in self.result.items() if k != "path"}}


class JobRunner:
    """Queue of jobs run one at a time in child processes."""

    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        for job in self.jobs.values():
            if job.work_dir:
                shutil.rmtree(job.work_dir, ignore_errors=True)

    def waiting(self) -> int:
        return sum(j.state in ("queued", "running") for j in self.jobs.values())

    def submit(self, kind: str, args: dict, work_dir: Path) -> Job:
        """Queue a job (the caller checked `waiting()` against MAX_WAITING_JOBS)."""
        self._evict()
        job = Job(uuid.uuid4().hex[:16], kind, work_dir=work_dir)
        self.jobs[job.id] = job
        self._queue.put_nowait((job, args))
        return job

    @staticmethod
    def new_work_dir() -> Path:
        return Path(tempfile.mkdtemp(prefix="lipstream-job-"))

    async def _run(self) -> None:
        while True:
            job, args = await self._queue.get()
            job.state = "running"
            await asyncio.get_running_loop().run_in_executor(None, _run_in_child, job, args)

    def _evict(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
        old = [j for j in finished if time.time() - j.created_s > JOB_TTL_S]
        expired = {j.id for j in old}  # by id: Job is a mutable dataclass, not hashable
        rest = [j for j in finished if j.id not in expired]
        old += sorted(rest, key=lambda j: j.created_s)[: max(0, len(self.jobs) - len(old) - KEPT_JOBS)]
        for job in old:
            if job.work_dir:
                shutil.rmtree(job.work_dir, ignore_errors=True)
            self.jobs.pop(job.id, None)


def _run_in_child(job: Job, args: dict) -> None:
    """Run the job in a fresh process, updating `job` from its progress messages (a thread)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(child, job.kind, args), daemon=True)
    process.start()
    child.close()
    outcome = None
    while True:
        try:
            kind, *rest = parent.recv()
        except EOFError:
            break
        if kind == "progress":
            job.done, job.total = rest
        else:
            outcome = (kind, rest)
    process.join()  # the job reads as finished only once its process is gone
    if outcome is None:
        job.state, job.error_kind = "failed", "InternalError"
        job.error = f"the job process stopped (exit code {process.exitcode})"
    elif outcome[0] == "done":
        job.result, job.state = outcome[1][0], "done"
    else:
        job.error_kind, job.error, job.state = outcome[1][0], outcome[1][1], "failed"


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
        conn.send(("failed", "InternalError", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _prepare_job(args: dict, progress) -> dict:
    from lipstream.avatar.package import load_package
    from lipstream.avatar.prepare import prepare

    out = prepare(args["source"], args["target"], fps=args["fps"], name=args["name"], progress=progress)
    package = load_package(out)
    return {"name": args["name"], "kind": package.kind, "width": package.size[0], "height": package.size[1],
            "fps": package.fps, "frames": package.frame_count}


def _render_job(args: dict, progress) -> dict:
    from lipstream.avatar.resolve import resolve_avatar
    from lipstream.offline import RenderOptions, render_file

    avatar = resolve_avatar(args["avatar"], avatars_dir=args["avatars_dir"])
    options = RenderOptions(renderer=args["renderer"], driver=args["driver"])
    summary = render_file(avatar, args["audio"], args["out"], options, progress=progress)
    return {"path": str(summary.path), "frames": summary.frames, "durationS": round(summary.duration_s, 3),
            "fps": summary.fps, "renderer": summary.renderer, "driver": summary.driver}
