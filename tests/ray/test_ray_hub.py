"""The replicas' shared hub alone (no Ray cluster): metrics of several replicas merge into one
exposition, each sample labelled with its replica; a replica that stops reporting drops out."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from lipstream.server.metrics import Metrics
from lipstream.server.ray_hub import STALE_S, Hub, merge_expositions


def replica_metrics(sessions: int, errors: int) -> str:
    metrics = Metrics()
    for _ in range(sessions):
        metrics.sessions_total.inc()
    metrics.errors.labels("SESSION_LIMIT").inc(errors)
    return metrics.exposition().decode()


def test_merged_exposition_has_every_replica_once_per_family():
    text = merge_expositions({"a": replica_metrics(2, 0), "b": replica_metrics(3, 1)}).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses: one family per name
    started = {s.labels["replica"]: s.value for s in families["lipstream_sessions"].samples
               if s.name == "lipstream_sessions_total"}
    assert started == {"a": 2.0, "b": 3.0}
    errors = [(s.labels["replica"], s.labels["code"], s.value) for s in families["lipstream_errors"].samples
              if s.name == "lipstream_errors_total"]
    assert errors == [("a", "SESSION_LIMIT", 0.0), ("b", "SESSION_LIMIT", 1.0)]
    assert text.count("# TYPE lipstream_sessions_total counter") == 1


def test_a_replica_that_stops_reporting_drops_out():
    now = [0.0]
    hub = Hub(clock=lambda: now[0])
    hub.report("a", "x 1\n")
    now[0] = STALE_S / 2
    hub.report("b", "x 2\n")
    assert sorted(hub.expositions_now()) == ["a", "b"]
    now[0] = STALE_S + 0.1
    assert sorted(hub.expositions_now()) == ["b"]
    hub.forget("b")
    assert hub.expositions_now() == {}
