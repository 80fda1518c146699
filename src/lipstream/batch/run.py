"""Running a manifest: clips already done are skipped, the rest go to a pool of workers that
keep their avatars loaded, local processes or Ray actors, and each comes back as a row.

Clips are handed out grouped by avatar, so a worker mostly renders clips of avatars it holds.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from lipstream.batch.clip import ClipRenderer
from lipstream.batch.manifest import Clip
from lipstream.batch.output import Destination
from lipstream.ray_runtime import LOCAL, connect, import_ray
from lipstream.store import DEFAULT_CACHE_MIB

SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

Progress = Callable[[dict], None]


def run_batch(clips: list[Clip], out: str, *, workers: int | None = None, ray_address: str | None = None,
              avatars: str | None = None, cache_mib: float = DEFAULT_CACHE_MIB, evaluate: bool = False,
              progress: Progress | None = None) -> list[dict]:
    """Render every clip not yet in `out`; rows in manifest order (skipped ones have "skipped").

    ray_address None = local processes (`workers` of them, default one per core); "local" = a
    Ray started here; else the address of a running cluster (ray://host:10001 or host:6379).
    """
    destination = Destination(out)
    rows: dict[str, dict] = {}
    todo = []
    for clip in clips:
        if destination.exists(clip.id):
            rows[clip.id] = {"id": clip.id, "ok": True, "skipped": True, "output": destination.name(clip.id)}
            progress and progress(rows[clip.id])
        else:
            todo.append(clip)
    todo.sort(key=lambda c: c.avatar)
    setup = (out, avatars, cache_mib, evaluate)
    run = _run_ray if ray_address is not None else _run_processes
    for row in run(todo, setup, workers, ray_address):
        rows[row["id"]] = row
        progress and progress(row)
    return [rows[clip.id] for clip in clips]


def _run_processes(clips: list[Clip], setup: tuple, workers: int | None, _address) -> list[dict]:
    if not clips:
        return
    for name in SINGLE_THREAD_ENV:  # read by the workers' numpy when they start
        os.environ.setdefault(name, "1")
    size = max(1, min(workers or os.cpu_count() or 1, len(clips)))
    with ProcessPoolExecutor(size, mp_context=mp.get_context("spawn"), initializer=_init_process,
                             initargs=setup) as pool:
        futures = {pool.submit(_render_in_process, clip): clip for clip in clips}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # the worker process died (killed, out of memory)
                yield {"id": futures[future].id, "ok": False, "kind": "InternalError",
                       "error": f"the worker process rendering it stopped ({type(exc).__name__}); run the batch again"}


_renderer: ClipRenderer | None = None


def _init_process(*setup) -> None:
    global _renderer
    _renderer = ClipRenderer(*setup)


def _render_in_process(clip: Clip) -> dict:
    return _renderer.render(clip)


def _run_ray(clips: list[Clip], setup: tuple, workers: int | None, address: str):
    """Clips on Ray actors fed one at a time from a shared queue. With a Ray started here
    (`local`), this process is one of the `workers` renderers (default one per core) beside
    `workers` - 1 actors (at least one): it renders clips from the same queue from the start,
    while Ray and the actors start (seconds in which the cores would otherwise wait), to the
    end; the actors and Ray are stopped as soon as the queue is empty, while this process may
    still be rendering its last clip. On a running Ray (an address) the actors render them all."""
    if not clips:
        return
    ray = import_ray()
    todo = deque(clips)
    pool = _RayPool(ray, setup, workers, address, todo)
    with _blas_single_threaded(pool.starts_ray):
        pool.start()
        try:
            if pool.starts_ray:
                here = ClipRenderer(*setup)
                while (clip := _next(todo)) is not None:
                    yield {**here.render(clip), "worker": "here"}
                    yield from pool.rows(wait=False)
            yield from pool.rows()
        finally:
            pool.stop()


def _blas_single_threaded(rendering_beside_ray: bool):
    """One BLAS thread in this process while it renders beside a Ray starting and stopping in
    another thread (`rendering_beside_ray`), else nothing. Ray forks its processes from that
    thread, and OpenBLAS's fork handler stops its thread pool under a BLAS call running here,
    which then spins forever (seen as a hung batch; a fork loop beside a matrix product does it
    within seconds). One thread has no pool to stop; it is what the process pool's workers use."""
    if not rendering_beside_ray:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class _RayPool(threading.Thread):
    """Ray's side of a batch, in a thread: starts Ray (`local`) or joins it, starts its actors
    (at most one per clip), feeds each a clip from `todo` as it finishes the one before, and
    puts each row on `rows()`; once `todo` is empty and the actors are done, stops them (and a
    Ray it started)."""

    def __init__(self, ray, setup: tuple, workers: int | None, address: str, todo: deque):
        super().__init__(name="lipstream-batch-ray", daemon=True)
        self.ray, self.setup, self.address, self.todo = ray, setup, address, todo
        self.starts_ray = not ray.is_initialized() and address == LOCAL
        # with a Ray started here this process renders too: it is one of the `workers`
        self.actors = max(1, (workers or os.cpu_count() or 1) - 1) if self.starts_ray else workers
        self.stopping = threading.Event()
        self.results: queue.Queue = queue.Queue()
        self.finished = False

    def run(self) -> None:
        ray, initialised_here = self.ray, not self.ray.is_initialized()
        try:
            if initialised_here:
                connect(self.address, num_cpus=self.actors if self.starts_ray else None, log_to_driver=False)
            if not self.todo:  # this process rendered every clip while Ray started
                return
            size = max(1, min(self.actors or int(ray.cluster_resources().get("CPU", 1)), len(self.todo)))
            actor = ray.remote(num_cpus=1)(ClipRenderer)
            actors = [actor.remote(*self.setup) for _ in range(size)]
            try:
                self._feed(actors)
            finally:
                for handle in actors:
                    ray.kill(handle)
        except BaseException as exc:  # given to the caller's thread by rows()
            self.results.put(exc)
        finally:
            if initialised_here:
                ray.shutdown()
            self.results.put(None)

    def _feed(self, actors: list) -> None:
        ray = self.ray
        started = [a.__ray_ready__.remote() for a in actors]
        starting = started
        while starting:
            if self.stopping.is_set() or not self.todo:  # nothing left for them (this process took the rest)
                return
            _, starting = ray.wait(starting, num_returns=len(starting), timeout=0.25)
        ray.get(started)  # an actor that failed to start raises here
        running = {}
        idle = list(actors)
        while not self.stopping.is_set():
            while idle and (clip := _next(self.todo)) is not None:
                handle = idle.pop()
                running[handle.render.remote(clip)] = (handle, clip)
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                handle, clip = running.pop(ref)
                try:
                    self.results.put({**ray.get(ref), "worker": "ray"})
                    idle.append(handle)
                except ray.exceptions.RayError as exc:  # the actor died (killed, out of memory)
                    self.results.put({"id": clip.id, "ok": False, "kind": "InternalError",
                                      "error": f"the Ray actor rendering it stopped ({type(exc).__name__}); "
                                               "run the batch again"})
        if not self.starts_ray:  # (with a Ray started here, this process renders what is left)
            while (clip := _next(self.todo)) is not None:  # every actor died
                self.results.put({"id": clip.id, "ok": False, "kind": "InternalError",
                                  "error": "no Ray actor left to render it; run the batch again"})

    def rows(self, wait: bool = True):
        """The actors' rows as they come (`wait` False: those already in); raises what stopped
        the pool (Ray failing to start)."""
        while not self.finished:
            try:
                row = self.results.get(block=wait)
            except queue.Empty:
                return
            if row is None:
                self.finished = True
            elif isinstance(row, BaseException):
                raise row
            else:
                yield row

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def _next(todo: deque) -> Clip | None:
    try:
        return todo.popleft()
    except IndexError:
        return None
