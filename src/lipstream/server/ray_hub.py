"""What the replicas of `lipstream serve --ray` share: their metrics and their jobs.

`Hub` is a one-replica Serve deployment beside the session replicas (Serve starts and stops it
with the application). Every replica reports its Prometheus exposition every METRICS_PUSH_S;
`GET /metrics` on any replica answers all of them merged, each sample labelled with its
`replica`, so one scrape of the Serve proxy sees the whole fleet. A replica that stopped
reporting (removed, dead) drops out after STALE_S.

Jobs: each replica reports its jobs' public state (at once after a request that may have
made one, and with its metrics), and a finished render's mp4 as an object in Ray's store (put
by the replica, which owns it; the hub holds the reference). A replica asked about a job it
doesn't have answers from the hub. A job whose replica died keeps its last state; its video
is gone with the replica.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

METRICS_PUSH_S = 2.0
STALE_S = 3 * METRICS_PUSH_S
REPLICA_LABEL = "replica"


class Hub:
    """The shared state (a Serve deployment's class: one replica, no HTTP route)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.expositions: dict[str, tuple[float, str]] = {}  # replica id -> (when reported, text)
        self.jobs: dict[str, dict] = {}  # job id -> its public state (with "replica")
        self.videos: dict[str, list] = {}  # job id -> [ObjectRef of the mp4's bytes]

    def report_jobs(self, replica: str, jobs: dict[str, dict]) -> None:
        """The jobs a replica holds now; its jobs that are gone from there (evicted) go here too."""
        for job_id in [j for j, job in self.jobs.items() if job["replica"] == replica and j not in jobs]:
            del self.jobs[job_id]
            self.videos.pop(job_id, None)
        for job_id, job in jobs.items():
            self.jobs[job_id] = {**job, "replica": replica}

    def put_video(self, job_id: str, video: list) -> None:
        """A finished render's video: [ObjectRef] (in a list, so that Ray passes the reference)."""
        self.videos[job_id] = video

    def job(self, job_id: str) -> dict | None:
        return self.jobs.get(job_id)

    async def video(self, job_id: str) -> bytes | None:
        refs = self.videos.get(job_id)
        if not refs:
            return None
        try:
            return await refs[0]
        except Exception:  # its replica (the object's owner) is gone
            self.videos.pop(job_id, None)
            return None

    def report(self, replica: str, exposition: str) -> None:
        self.expositions[replica] = (self.clock(), exposition)

    def forget(self, replica: str) -> None:
        self.expositions.pop(replica, None)

    def expositions_now(self) -> dict[str, str]:
        """The latest exposition of each replica that reported within STALE_S."""
        now = self.clock()
        for replica, (at, _) in list(self.expositions.items()):
            if now - at > STALE_S:
                del self.expositions[replica]
        return {replica: text for replica, (_, text) in self.expositions.items()}


def merge_expositions(expositions: dict[str, str]) -> bytes:
    """One Prometheus text exposition of several, each sample labelled `replica` with its key."""
    families: dict[str, Metric] = {}
    for replica, text in sorted(expositions.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, REPLICA_LABEL: replica}, sample.value,
                                  sample.timestamp)

    class Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)
