"""`lipstream serve --ray`: the session server as Ray Serve replicas, each running the whole
single-machine app (protocol, presets, worker pool, health, metrics) for a few sessions.

Ray Serve pins each WebSocket to one replica for its life. Over capacity it would queue a new
handshake at the proxy (and answer HTTP 500 once its queue is full: ../shared/notes/ray.md), so
each replica takes up to `sessions_per_replica` + REFUSAL_SLOTS requests and refuses sessions
beyond its own limit itself, at once, with our SESSION_LIMIT error. Our request router
(ray_router.py) sends each new request to the replica with the fewest open WebSockets, so
sessions spread evenly and a session is refused only when every replica is full.

Every WebSocket handshake answers with an `x-lipstream-replica` header naming its replica.
"""

from __future__ import annotations

import dataclasses
import os

from lipstream.errors import NotSupportedError
from lipstream.server.state import ServerSettings

REFUSAL_SLOTS = 4  # requests a full replica still takes: refusals, /health, /metrics
REPLICA_HEADER = b"x-lipstream-replica"
LOCAL_RAY = "local"
ROUTER_CLASS = "lipstream.server.ray_router:FewestSessionsRouter"


def build_application(settings: ServerSettings, replicas: int, sessions_per_replica: int, num_cpus: float = 1,
                      num_gpus: float = 0, workers_per_replica: int = 1):
    """The Serve application (bind()); each replica serves at most `sessions_per_replica`."""
    serve = _serve()
    settings = dataclasses.replace(settings, max_sessions=sessions_per_replica, workers=workers_per_replica)

    def build():
        from lipstream.server.app import create_app

        return ReplicaHeader(create_app(settings))

    from ray.serve.config import RequestRouterConfig

    from lipstream.server.ray_router import ROUTING_STATS_PERIOD_S, SOCKETS_STAT

    router = RequestRouterConfig(request_router_class=ROUTER_CLASS,
                                 request_routing_stats_period_s=ROUTING_STATS_PERIOD_S)

    @serve.deployment(name="lipstream", num_replicas=replicas, max_ongoing_requests=sessions_per_replica + REFUSAL_SLOTS,
                      ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus}, request_router_config=router)
    @serve.ingress(build)
    class LipstreamReplica:
        """One replica: the app `build` makes, with its own worker pool."""

        def record_routing_stats(self) -> dict:
            """What the router ranks replicas by (Serve asks every ROUTING_STATS_PERIOD_S)."""
            return {SOCKETS_STAT: self.app.open_sockets}

    return LipstreamReplica.bind()


def app(args: dict):
    """The application for a Serve config file or KubeRay's RayService (import_path:
    lipstream.server.ray_serve:app); args: replicas, sessions_per_replica, workers_per_replica,
    avatar_store, avatar_cache_mib, renderer, num_gpus (token from $LIPSTREAM_TOKEN)."""
    settings = ServerSettings(avatar_store=args.get("avatar_store"), renderer=args.get("renderer", "auto"),
                              avatar_cache_mib=float(args.get("avatar_cache_mib", 1024)),
                              token=os.environ.get("LIPSTREAM_TOKEN") or None)
    return build_application(settings, int(args.get("replicas", 2)), int(args.get("sessions_per_replica", 2)),
                             num_gpus=float(args.get("num_gpus", 0)),
                             workers_per_replica=int(args.get("workers_per_replica", 1)))


class ReplicaHeader:
    """ASGI middleware: WebSocket handshakes answer with the replica's id (x-lipstream-replica);
    counts the open WebSockets (`open_sockets`, reported to the router)."""

    def __init__(self, app):
        self.app = app
        self.replica = _replica_id().encode()
        self.open_sockets = 0

    def __getattr__(self, name):  # Serve reads the FastAPI app's attributes (routes, lifespan, ...)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "websocket.accept":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.replica)]}
            await send(message)

        self.open_sockets += 1
        try:
            return await self.app(scope, receive, tagged)
        finally:
            self.open_sockets -= 1


def run_on_ray(address: str, settings: ServerSettings, host: str, port: int, replicas: int,
               sessions_per_replica: int, workers_per_replica: int = 1) -> None:
    """Start (or join) Ray, run the application until interrupted; `address` "local" starts Ray here."""
    import time

    import ray

    serve = _serve()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == LOCAL_RAY:
        ray.init(include_dashboard=False)
    else:
        ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})  # no request_timeout_s: it would end WebSockets
    serve.run(build_application(settings, replicas, sessions_per_replica, workers_per_replica=workers_per_replica),
              name="lipstream", route_prefix="/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if address != LOCAL_RAY:
            serve.delete("lipstream")  # the cluster goes on; a local Ray ends with its driver
        ray.shutdown()  # (serve.shutdown() here hung for minutes on the 2-core VM)


def _replica_id() -> str:
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not in a replica (tests of the app alone)
        return f"pid-{os.getpid()}"


def _serve():
    try:
        from ray import serve
    except ImportError:
        raise NotSupportedError("--ray needs Ray Serve: pip install 'lipstream[ray]'") from None
    return serve
