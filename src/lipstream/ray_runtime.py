"""Connecting to Ray, for `serve --ray` and `batch --ray`: a local Ray started here with
lipstream's settings, or a running cluster joined by its address.

A cluster's processes read their settings where `ray start` ran (docs/scale.md lists them);
a Ray started here reads them from this process's environment, set by `connect` before Ray starts.
"""

from __future__ import annotations

import os

from lipstream.errors import NotSupportedError

LOCAL = "local"  # the address that starts a Ray here

NO_USAGE_STATS = {"RAY_USAGE_STATS_ENABLED": "0"}  # this process sends no usage report home
# Read by every process of a Ray started here (values already in the environment win):
LOCAL_RAY_ENV = {
    **NO_USAGE_STATS,
    # Ray runs its workers at nice 15 unless told: any other busy process on the machine would then
    # take the cores from live sessions, renders, and Serve's proxy while it starts.
    "RAY_worker_niceness": "0",
}


def import_ray():
    """The `ray` module, or NotSupportedError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise NotSupportedError("--ray needs Ray: pip install 'lipstream[ray]'") from None
    return ray


def connect(address: str, *, num_cpus: int | None = None, env: dict[str, str] | None = None,
            log_to_driver: bool = True) -> bool:
    """Start a local Ray (`address` LOCAL: `num_cpus` CPUs, default all; no dashboard; LOCAL_RAY_ENV
    and `env` in its processes' environment) or join the cluster at `address` (`env` is then the
    cluster's business). True when Ray was started here: the caller shuts it down (ray.shutdown)."""
    ray = import_ray()
    if address != LOCAL:
        for name, value in NO_USAGE_STATS.items():
            os.environ.setdefault(name, value)
        ray.init(address=address, log_to_driver=log_to_driver)
        return False
    for name, value in {**LOCAL_RAY_ENV, **(env or {})}.items():
        os.environ.setdefault(name, value)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
    return True
