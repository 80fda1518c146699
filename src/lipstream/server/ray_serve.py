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

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import re
from pathlib import Path

from lipstream.errors import NotSupportedError
from lipstream.server.state import ServerSettings

REFUSAL_SLOTS = 4  # requests a full replica still takes: refusals, /health, /metrics
REPLICA_HEADER = b"x-lipstream-replica"
LOCAL_RAY = "local"
ROUTER_CLASS = "lipstream.server.ray_router:FewestSessionsRouter"
GPU_RENDERERS = ("neural",)
JOB_PATH = re.compile(r"/api/jobs/(?P<id>[^/]+)(?P<result>/result)?")
GOING_AWAY_S = 5.0  # a draining replica's sessions get this long to reconnect elsewhere before it closes them
DRAIN_POLL_S = 0.25
SHUTDOWN_MARGIN_S = 5.0  # Serve's graceful shutdown waits this much past GOING_AWAY_S before it kills the replica

AUTOSCALE_FILL = 0.75  # with autoscaling: a new replica starts when the average one has this share of its sessions
UPSCALE_DELAY_S = 5.0
DOWNSCALE_DELAY_S = 120.0  # a replica is removed after this long under target (its sessions get GOING_AWAY_S)
LOOK_BACK_S = 10.0  # open sockets are averaged over this long

log = logging.getLogger(__name__)


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


class ReplicaFront:
    """ASGI middleware in each replica, in front of the whole app:
    - every response and WebSocket handshake carries the replica's id (x-lipstream-replica),
      and the open WebSockets are counted (`open_sockets`, reported to the router);
    - with the hub (ray_hub.py): every METRICS_PUSH_S the replica's metrics and jobs go there
      (jobs also at once after a POST); `GET /metrics` (once the app's own route has checked
      the token) answers every replica's metrics merged; a job this replica doesn't have
      (`GET /api/jobs/ID`, `.../result`: the app answered 404, after its token check) is
      answered from the hub;
    - when Serve starts to drain the replica (scale-down, redeploy), its sessions get a
      `going_away` status and GOING_AWAY_S to reconnect (to another replica: this one gets no
      new requests) before they are closed."""

    def __init__(self, app, hub=None):
        self.app = app
        self.hub = hub
        self.replica = _replica_id()
        self.open_sockets = 0
        self.tasks: list[asyncio.Task] = []
        self.videos_shared: set[str] = set()

    def __getattr__(self, name):  # Serve reads the FastAPI app's attributes (routes, lifespan, ...)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan" and not self.tasks:
            self.tasks = [asyncio.create_task(self._watch_drain())]
            if self.hub is not None:
                self.tasks.append(asyncio.create_task(self._push_loop()))
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        send = self._tagged(send)
        if scope["type"] == "http":
            if self.hub is None:
                return await self.app(scope, receive, send)
            if scope["path"] == "/metrics":
                return await self._all_metrics(scope, receive, send)
            job = JOB_PATH.fullmatch(scope["path"])
            if job and scope["method"] == "GET":
                return await self._job_or_from_hub(scope, receive, send, job["id"], bool(job["result"]))
            await self.app(scope, receive, send)
            if scope["method"] == "POST":  # it may have made a job: every replica should know it now
                await self._push_jobs()
            return
        self.open_sockets += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.open_sockets -= 1

    def _tagged(self, send):
        async def tagged(message):
            if message["type"] in ("websocket.accept", "http.response.start"):
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.replica.encode())]}
            await send(message)

        return tagged

    async def _all_metrics(self, scope, receive, send):
        """The app's /metrics (its token check and its own exposition) with the body replaced by
        all replicas' expositions merged."""
        from lipstream.server.ray_hub import merge_expositions

        start = {}

        async def held(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif start.get("status") != 200:
                await send(start)
                await send(message)
            elif not message.get("more_body"):
                others = await self.hub.expositions_now.remote()
                others[self.replica] = self._exposition()
                await _respond(send, start, merge_expositions(others))

        await self.app(scope, receive, held)

    async def _job_or_from_hub(self, scope, receive, send, job_id: str, result: bool):
        """The app's answer, unless it is a 404: then the hub's record of the job (another
        replica's), its video for `result`."""
        held: list[dict] = []

        async def gate(message):
            if held or (message["type"] == "http.response.start" and message["status"] == 404):
                held.append(message)
            else:
                await send(message)

        await self.app(scope, receive, gate)
        if not held:
            return
        job = await self.hub.job.remote(job_id)
        if job is None:
            for message in held:
                await send(message)
        elif not result:
            await _respond(send, {"status": 200, "headers": [(b"content-type", b"application/json")]},
                           json.dumps({k: v for k, v in job.items() if k != "replica"}).encode())
        else:
            video = await self.hub.video.remote(job_id) if job["kind"] == "render" and job["state"] == "done" else None
            if video is None:
                body = {"detail": f"job {job_id} has no video to download here (state {job['state']}"
                                  + (", its replica is gone)" if job["state"] == "done" else ")")}
                await _respond(send, {"status": 409, "headers": [(b"content-type", b"application/json")]},
                               json.dumps(body).encode())
            else:
                await _respond(send, {"status": 200, "headers": [
                    (b"content-type", b"video/mp4"),
                    (b"content-disposition", b'attachment; filename="lipstream.mp4"')]}, video)

    def _exposition(self) -> str:
        return self.app.state.lipstream.metrics.exposition().decode()

    async def _push_loop(self) -> None:
        from lipstream.server.ray_hub import METRICS_PUSH_S

        while True:
            with contextlib.suppress(Exception):  # the hub restarting: the next push will do
                await self.hub.report.remote(self.replica, self._exposition())
                await self._push_jobs()
            await asyncio.sleep(METRICS_PUSH_S)

    async def _push_jobs(self) -> None:
        """This replica's jobs to the hub, and each finished render's video once (Ray's object store)."""
        import ray

        jobs = self.app.state.jobs.jobs
        await self.hub.report_jobs.remote(self.replica, {job_id: job.public() for job_id, job in list(jobs.items())})
        for job_id, job in list(jobs.items()):
            if job.kind == "render" and job.state == "done" and job_id not in self.videos_shared:
                self.videos_shared.add(job_id)
                video = await asyncio.to_thread(Path(job.result["path"]).read_bytes)
                await self.hub.put_video.remote(job_id, [ray.put(video)])

    async def _watch_drain(self) -> None:
        replica = _serve_replica()
        if replica is None:
            return
        while not replica._shutting_down:
            await asyncio.sleep(DRAIN_POLL_S)
        connections = list(self.app.state.lipstream.sessions.values())
        log.info("replica draining: %d sessions told to reconnect within %g s", len(connections), GOING_AWAY_S)
        for connection in connections:
            connection.go_away(GOING_AWAY_S)
        for task in self.tasks[1:]:
            task.cancel()
        if self.hub is not None:
            with contextlib.suppress(Exception):
                await self.hub.forget.remote(self.replica)


def run_on_ray(address: str, settings: ServerSettings, host: str, port: int, replicas: int,
               sessions_per_replica: int, workers_per_replica: int = 1, max_replicas: int | None = None,
               num_gpus: float | None = None) -> None:
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
    serve.run(build_application(settings, replicas, sessions_per_replica, num_gpus=gpus_per_replica(settings, num_gpus),
                                workers_per_replica=workers_per_replica, max_replicas=max_replicas),
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


async def _respond(send, start: dict, body: bytes) -> None:
    """An HTTP answer: `start`'s status and headers (its content-length replaced), then `body`."""
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    await send({"type": "http.response.start", "status": start["status"],
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replica_id() -> str:
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not in a replica (tests of the app alone)
        return f"pid-{os.getpid()}"


def _serve_replica():
    """Serve's object for the replica running in this process, or None outside a replica.

    Serve has no hook that runs when a replica starts to drain: it waits for the ongoing
    requests (our WebSockets, for as long as they last) and only then runs the app's shutdown.
    Its replica object's `_shutting_down` flag (Ray Serve 2.60) is the one sign; we read it."""
    with contextlib.suppress(ImportError):
        from ray.serve._private.replica import Replica

        return next((o for o in gc.get_objects() if isinstance(o, Replica)), None)
    return None


def _serve():
    try:
        from ray import serve
    except ImportError:
        raise NotSupportedError("--ray needs Ray Serve: pip install 'lipstream[ray]'") from None
    return serve
