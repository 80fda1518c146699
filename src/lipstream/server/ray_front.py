"""The ASGI middleware in front of lipstream's app in each Ray Serve replica (ray_serve.py):
the replica's id on every answer, its open WebSockets counted for the router (ray_router.py),
its metrics and jobs shared through the hub (ray_hub.py), and its sessions told to reconnect
when Serve drains it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
from pathlib import Path

REPLICA_HEADER = b"x-lipstream-replica"
JOB_PATH = re.compile(r"/api/jobs/(?P<id>[^/]+)(?P<result>/result)?")
GOING_AWAY_S = 5.0  # a draining replica's sessions get this long to reconnect elsewhere before it closes them
DRAIN_POLL_S = 0.25

log = logging.getLogger(__name__)


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
            if hasattr(connection, "go_away"):  # a WebSocket session
                connection.go_away(GOING_AWAY_S)
            else:  # a WebRTC peer has no message to give: it is closed as late as the others
                asyncio.get_running_loop().call_later(GOING_AWAY_S, asyncio.ensure_future, connection.close())
        for task in self.tasks[1:]:
            task.cancel()
        if self.hub is not None:
            with contextlib.suppress(Exception):
                await self.hub.forget.remote(self.replica)


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
