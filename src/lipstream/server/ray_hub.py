"""What the replicas of `lipstream serve --ray` share: their metrics, in one place.

`Hub` is a one-replica Serve deployment beside the session replicas (Serve starts and stops it
with the application). Every replica reports its Prometheus exposition every METRICS_PUSH_S;
`GET /metrics` on any replica answers all of them merged, each sample labelled with its
`replica`, so one scrape of the Serve proxy sees the whole fleet. A replica that stopped
reporting (removed, dead) drops out after STALE_S.
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
