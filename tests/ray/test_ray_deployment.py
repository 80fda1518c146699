"""The Serve deployment `serve --ray` builds (no Ray cluster needed to define one): autoscaling
on open sessions between --replicas and --max-replicas, GPUs for the GPU backend, our router,
and a shutdown grace longer than the time sessions get to reconnect."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve")

from lipstream.server.ray_serve import (  # noqa: E402
    AUTOSCALE_FILL, GOING_AWAY_S, REFUSAL_SLOTS, ROUTER_CLASS, gpus_per_replica, lipstream_deployment)
from lipstream.server.state import ServerSettings  # noqa: E402


def test_fixed_replicas_without_max_replicas():
    deployment = lipstream_deployment(ServerSettings(), replicas=3, sessions_per_replica=2)
    config = deployment._deployment_config
    assert deployment.num_replicas == 3 and config.autoscaling_config is None
    assert deployment.max_ongoing_requests == 2 + REFUSAL_SLOTS
    assert config.request_router_config.request_router_class == ROUTER_CLASS
    assert config.graceful_shutdown_timeout_s > GOING_AWAY_S


def test_autoscaling_on_open_sessions_up_to_max_replicas():
    deployment = lipstream_deployment(ServerSettings(), replicas=2, sessions_per_replica=4, max_replicas=6)
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (2, 2, 6)
    assert scaling.target_ongoing_requests == 4 * AUTOSCALE_FILL


def test_gpus_per_replica_for_the_gpu_backend_only():
    assert gpus_per_replica(ServerSettings(renderer="neural"), None) == 1.0
    assert gpus_per_replica(ServerSettings(renderer="warp"), None) == 0.0
    assert gpus_per_replica(ServerSettings(renderer="auto"), 0.5) == 0.5
    deployment = lipstream_deployment(ServerSettings(renderer="neural"), 1, 2, num_gpus=1.0)
    assert deployment.ray_actor_options["num_gpus"] == 1.0


def test_the_kuberay_manifest_builds_the_application():
    from pathlib import Path

    import yaml

    from lipstream.errors import NotSupportedError
    from lipstream.ray_runtime import LOCAL_RAY_ENV
    from lipstream.server.ray_serve import SERVE_ENV, app

    manifest = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "ray-service.yaml").read_text())
    (application,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    assert application["import_path"] == "lipstream.server.ray_serve:app"
    app(application["args"])  # every arg known, every value of the right kind
    with pytest.raises(NotSupportedError, match="unknown lipstream args sesions_per_replica"):
        app({**application["args"], "sesions_per_replica": 3})
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:  # every node: replicas and proxies
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        wanted = {**SERVE_ENV, "RAY_worker_niceness": LOCAL_RAY_ENV["RAY_worker_niceness"]}
        assert wanted.items() <= env.items(), group.get("groupName", "head")
