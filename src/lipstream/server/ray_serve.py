"""`lipstream serve --ray`: the session server as Ray Serve replicas, each running the whole
single-machine app (protocol, presets, worker pool, health, metrics) for a few sessions.

Ray Serve pins each WebSocket to one replica for its life. Over capacity it would queue a new
handshake at the proxy (and answer HTTP 500 once its queue is full: ../shared/notes/ray.md), so
each replica takes up to `sessions_per_replica` + REFUSAL_SLOTS requests and refuses sessions
beyond its own limit itself, at once, with our SESSION_LIMIT error. Our request router
(ray_router.py) sends each new request to the replica with the fewest open WebSockets, so
sessions spread evenly and a session is refused only when every replica is full.

In each replica a ReplicaFront (ray_front.py) stands in front of the app: every answer names
its replica (x-lipstream-replica), metrics and jobs are shared through the hub (ray_hub.py),
and sessions are told to reconnect when Serve drains the replica.
"""

from __future__ import annotations

import dataclasses
import os

from lipstream.errors import NotSupportedError
from lipstream.ray_runtime import connect
from lipstream.server.ray_front import GOING_AWAY_S, ReplicaFront
from lipstream.server.ray_proxy import PROXY_CALLBACK
from lipstream.server.state import ServerSettings

REFUSAL_SLOTS = 4  # requests a full replica still takes: refusals, /health, /metrics
ROUTER_CLASS = "lipstream.server.ray_router:FewestSessionsRouter"
GPU_RENDERERS = ("neural",)
SHUTDOWN_MARGIN_S = 5.0  # Serve's graceful shutdown waits this much past GOING_AWAY_S before it kills the replica

AUTOSCALE_FILL = 0.75  # with autoscaling: a new replica starts when the average one has this share of its sessions
UPSCALE_DELAY_S = 5.0
DOWNSCALE_DELAY_S = 120.0  # a replica is removed after this long under target (its sessions get GOING_AWAY_S)
LOOK_BACK_S = 15.0  # open sockets are averaged over this long (Serve wants more than its 10 s metrics interval)
# Serve's controller gives a starting HTTP proxy 5 s to answer (then 10, 15, ...) and kills it when
# it doesn't; with both cores busy the proxy is still importing then, and serve.start gives up
# after its own 60 s. One wait as long as serve.start's lets a slow proxy finish starting.
PROXY_READY_TIMEOUT_S = 60

# Ray Serve settings for long-lived sockets carrying 25 messages a second each, read by the
# processes of a Ray started here (beside ray_runtime.LOCAL_RAY_ENV; set them on a cluster's
# nodes yourself, see docs/scale.md):
# the replica runs our app on its own event loop rather than in a second thread, and the
# proxy routes on its own loop, so no message crosses between threads' loops on its way; the
# proxy talks to replicas over gRPC directly rather than through Ray's object references
# (0.4 ms less CPU per frame message here, docs/scale.md) and doesn't compress frames (ray_proxy.py).
SERVE_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
             "RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_CALLBACK}

def build_application(settings: ServerSettings, replicas: int, sessions_per_replica: int, num_cpus: float = 1,
                      num_gpus: float = 0, workers_per_replica: int = 1, max_replicas: int | None = None):
    """The Serve application: `lipstream_deployment`'s replicas and the hub they share."""
    return bind_application(lipstream_deployment(settings, replicas, sessions_per_replica, num_cpus, num_gpus,
                                                 workers_per_replica, max_replicas))


def bind_application(deployment):
    """`deployment` (lipstream_deployment's, or its .options()) bound with a Hub deployment."""
    from lipstream.server.ray_hub import Hub

    hub = _serve().deployment(name="lipstream-hub", num_replicas=1, ray_actor_options={"num_cpus": 0})(Hub)
    return deployment.bind(hub.bind())


def lipstream_deployment(settings: ServerSettings, replicas: int, sessions_per_replica: int, num_cpus: float = 1,
                         num_gpus: float = 0, workers_per_replica: int = 1, max_replicas: int | None = None):
    """The Serve deployment: `replicas` replicas each serving at most `sessions_per_replica`;
    with `max_replicas` above `replicas`, Serve adds replicas when the average one has more
    than AUTOSCALE_FILL of its sessions open (and removes them when they empty)."""
    serve = _serve()
    from ray.serve.config import RequestRouterConfig

    from lipstream.server.ray_router import ROUTING_STATS_PERIOD_S, SOCKETS_STAT

    settings = dataclasses.replace(settings, max_sessions=sessions_per_replica, workers=workers_per_replica)

    scaling = {"num_replicas": replicas}
    if max_replicas is not None and max_replicas > replicas:
        scaling = {"autoscaling_config": {
            "min_replicas": replicas, "initial_replicas": replicas, "max_replicas": max_replicas,
            "target_ongoing_requests": sessions_per_replica * AUTOSCALE_FILL,
            "upscale_delay_s": UPSCALE_DELAY_S, "downscale_delay_s": DOWNSCALE_DELAY_S,
            "look_back_period_s": LOOK_BACK_S}}
    router = RequestRouterConfig(request_router_class=ROUTER_CLASS,
                                 request_routing_stats_period_s=ROUTING_STATS_PERIOD_S)

    @serve.deployment(name="lipstream", max_ongoing_requests=sessions_per_replica + REFUSAL_SLOTS,
                      ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus}, request_router_config=router,
                      graceful_shutdown_timeout_s=GOING_AWAY_S + SHUTDOWN_MARGIN_S, graceful_shutdown_wait_loop_s=0.5,
                      **scaling)
    @serve.ingress()
    class LipstreamReplica:
        """One replica: the whole app, with its own worker pool; `hub` is the Hub deployment's handle."""

        def __init__(self, hub=None):
            self.hub = hub

        def __serve_build_asgi_app__(self):
            from lipstream.server.app import create_app

            return ReplicaFront(create_app(settings), self.hub)

        def record_routing_stats(self) -> dict:
            """What the router ranks replicas by (Serve asks every ROUTING_STATS_PERIOD_S)."""
            return {SOCKETS_STAT: self.app.open_sockets}

    return LipstreamReplica


APP_ARGS = ("replicas", "max_replicas", "sessions_per_replica", "workers_per_replica", "avatar_store",
            "avatar_cache_mib", "renderer", "num_gpus")


def app(args: dict):
    """The application for a Serve config file or KubeRay's RayService (import_path:
    lipstream.server.ray_serve:app); args: APP_ARGS (token from $LIPSTREAM_TOKEN)."""
    unknown = sorted(set(args) - set(APP_ARGS))
    if unknown:
        raise NotSupportedError(f"unknown lipstream args {', '.join(unknown)}; known: {', '.join(APP_ARGS)}")
    settings = ServerSettings(avatar_store=args.get("avatar_store"), renderer=args.get("renderer", "auto"),
                              avatar_cache_mib=float(args.get("avatar_cache_mib", 1024)),
                              token=os.environ.get("LIPSTREAM_TOKEN") or None)
    gpus = args.get("num_gpus")
    return build_application(settings, int(args.get("replicas", 2)), int(args.get("sessions_per_replica", 2)),
                             num_gpus=gpus_per_replica(settings, None if gpus is None else float(gpus)),
                             workers_per_replica=int(args.get("workers_per_replica", 1)),
                             max_replicas=int(args["max_replicas"]) if args.get("max_replicas") else None)


def gpus_per_replica(settings: ServerSettings, asked: float | None) -> float:
    """GPUs a replica reserves: what was asked, else one for the GPU backend (neural), else none
    (with `auto`, each replica's selector picks among the backends its own device runs)."""
    if asked is not None:
        return asked
    return 1.0 if settings.renderer in GPU_RENDERERS else 0.0


def run_on_ray(address: str, settings: ServerSettings, host: str, port: int, replicas: int,
               sessions_per_replica: int, workers_per_replica: int = 1, max_replicas: int | None = None,
               num_gpus: float | None = None) -> None:
    """Start (or join) Ray, run the application until interrupted; `address` "local" starts Ray here."""
    import time

    import ray

    serve = _serve()
    started_here = connect(address, env=SERVE_ENV)
    start_serve(host, port)
    serve.run(build_application(settings, replicas, sessions_per_replica, num_gpus=gpus_per_replica(settings, num_gpus),
                                workers_per_replica=workers_per_replica, max_replicas=max_replicas),
              name="lipstream", route_prefix="/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if not started_here:
            serve.delete("lipstream")  # the cluster goes on; a local Ray ends with its driver
        ray.shutdown()  # (serve.shutdown() here hung for minutes on the 2-core VM)


def start_serve(host: str, port: int) -> None:
    """Start Serve's controller and HTTP proxy on `host`:`port` in the connected Ray."""
    _serve().start(http_options={"host": host, "port": port},  # no request_timeout_s: it would end WebSockets
                   controller_options={"runtime_env": {"env_vars": {
                       "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": str(PROXY_READY_TIMEOUT_S)}}})


def _serve():
    try:
        from ray import serve
    except ImportError:
        raise NotSupportedError("--ray needs Ray Serve: pip install 'lipstream[ray]'") from None
    return serve
