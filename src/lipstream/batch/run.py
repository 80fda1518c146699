"""Running a manifest: clips already done are skipped, the rest go to a pool of workers that
keep their avatars loaded, local processes or Ray actors, and each comes back as a row.

Clips are handed out grouped by avatar, so a worker mostly renders clips of avatars it holds.
"""

from __future__ import annotations

import os
import multiprocessing as mp
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
    if not clips:
        return
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise NotSupportedError("--ray needs Ray: pip install 'lipstream[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == LOCAL_RAY:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        size = max(1, min(workers or int(ray.cluster_resources().get("CPU", 1)), len(clips)))
        actor = ray.remote(num_cpus=1)(ClipRenderer)
        actors = [actor.remote(*setup) for _ in range(size)]
        try:
            yield from ActorPool(actors).map_unordered(lambda a, clip: a.render.remote(clip), clips)
        finally:
            for handle in actors:
                ray.kill(handle)
    finally:
        if started_here:
            ray.shutdown()
