"""Running a manifest: clips already done are skipped, the rest go to a pool of workers that
keep their avatars loaded, local processes or Ray actors, and each comes back as a row.

Clips are handed out grouped by avatar, so a worker mostly renders clips of avatars it holds.
"""

from __future__ import annotations

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
from lipstream.errors import NotSupportedError
from lipstream.store import DEFAULT_CACHE_MIB

SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LOCAL_RAY = "local"

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
    (`local`), this process renders clips too until the actors are up (at least the first
    clip): starting Ray and its actors takes seconds in which the cores would otherwise wait."""
    if not clips:
        return
    ray = _ray()
    todo = deque(clips)
    pool = _RayPool(ray, setup, workers, address, todo)
    pool.start()
    try:
        if pool.starts_ray:
            here = None
            while not pool.ready.is_set() or here is None:
                clip = _next(todo)
                if clip is None:
                    break
                here = here or ClipRenderer(*setup)
                yield {**here.render(clip), "worker": "here"}
        yield from pool.rows()
    finally:
        pool.stop()


class _RayPool(threading.Thread):
    """Ray's side of a batch, in a thread: starts Ray (`local`, with `workers` CPUs) or joins
    it, starts one actor per CPU (at most one per clip), feeds each actor a clip from `todo` as
    it finishes the one before, and puts each row on `rows()`; `ready` is set once the actors
    are up. Ray started here is shut down at the end."""

    def __init__(self, ray, setup: tuple, workers: int | None, address: str, todo: deque):
        super().__init__(name="lipstream-batch-ray", daemon=True)
        self.ray, self.setup, self.workers, self.address, self.todo = ray, setup, workers, address, todo
        self.starts_ray = not ray.is_initialized() and address == LOCAL_RAY
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.results: queue.Queue = queue.Queue()

    def run(self) -> None:
        ray, initialised_here = self.ray, not self.ray.is_initialized()
        try:
            if self.starts_ray:
                os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 yields the cores to any other job
                ray.init(num_cpus=self.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
            elif initialised_here:
                ray.init(address=self.address, log_to_driver=False)
            if not self.todo:  # this process rendered every clip while Ray started
                return
            size = max(1, min(self.workers or int(ray.cluster_resources().get("CPU", 1)), len(self.todo)))
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
            self.ready.set()
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
        self.ready.set()
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
        while (clip := _next(self.todo)) is not None:  # every actor died
            self.results.put({"id": clip.id, "ok": False, "kind": "InternalError",
                              "error": "no Ray actor left to render it; run the batch again"})

    def rows(self):
        """The actors' rows as they come; raises what stopped the pool (Ray failing to start)."""
        while (row := self.results.get()) is not None:
            if isinstance(row, BaseException):
                raise row
            yield row

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def _next(todo: deque) -> Clip | None:
    try:
        return todo.popleft()
    except IndexError:
        return None


def _ray():
    try:
        import ray
    except ImportError:
        raise NotSupportedError("--ray needs Ray: pip install 'lipstream[ray]'") from None
    return ray
