"""`lipstream serve`: the demo page, the HTTP API, the WebSocket protocol, health and metrics.

    GET  /                      demo page (plain HTML + JS)
    WS   /ws                    real-time sessions (docs/protocol.md)
    GET  /health                active sessions, workers, CPU, memory, GPU (no token needed)
    GET  /metrics               Prometheus metrics
    GET  /api/presets           the latency presets
    GET  /api/avatars           avatars that can be used
    POST /api/avatars           upload a photo or video (multipart: file, name) -> prepare job
    POST /api/avatars/preload   {"avatars": [names]}: every worker fetches and holds them now
    POST /api/render            multipart: audio, avatar, renderer, driver -> render job (mp4)
    GET  /api/jobs/{id}         a job's state and progress; /result downloads a render's mp4
    DELETE /api/jobs/{id}       cancel a job (its process is stopped, its files removed)
    GET  /api/sessions          per-session stats
    POST /webrtc/offer          {"sdp", "type": "offer", "avatar", "preset"} -> {"sdp", "type": "answer"}
    GET  /webrtc/ice-servers    the STUN/TURN servers the client should use too (serve --ice-server)

With a token set, everything but /, /health, /api/presets and /api/docs needs
`Authorization: Bearer TOKEN`; only /ws also takes `?token=` (browsers' WebSockets can't send
headers), and it is cut from the access log. Bodies, inputs and jobs are limited (docs/security.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Annotated, Literal

import psutil
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, StringConstraints

from lipstream.avatar.package import is_package, read_manifest
from lipstream.avatar.prepare import DEFAULT_FPS
from lipstream.avatar.resolve import DEFAULT_NAME, SAFE_NAME
from lipstream.errors import LipstreamError
from lipstream.motion.drivers import DEFAULT_DRIVER
from lipstream.server.connection import Connection
from lipstream.server.jobs import MAX_WAITING_JOBS, JobRunner, sniff_media
from lipstream.server.limits import BodySizeLimit
from lipstream.server import protocol as p
from lipstream.server.protocol import MAX_MESSAGE_BYTES
from lipstream.server.redact import public_message
from lipstream.server.state import ServerSettings, ServerState
from lipstream.server.transport import BoundedWebSocketProtocol, HeaderTimeoutH11Protocol, install_log_filter
from lipstream.stream.pool import WorkerPool
from lipstream.session.size import MAX_SIDE_PX, MIN_SIDE_PX
from lipstream.session.presets import DEFAULT_PRESET, PRESETS, get_preset
from lipstream.stream.session import SessionConfig

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
COPY_CHUNK_BYTES = 1 << 20
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
GRACEFUL_SHUTDOWN_S = 2  # open connections get this long after Ctrl+C; then they are cancelled
MAX_SDP_CHARS = 65536
SESSION_RETRY_AFTER_S = 5


def create_app(settings: ServerSettings) -> FastAPI:
    """The ASGI app; its lifespan starts the worker processes and the job runner."""
    state = ServerState(settings, WorkerPool(settings.workers, settings.avatar_store or settings.avatars_dir,
                                             settings.avatar_cache_mib))
    jobs = JobRunner(settings.job_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        install_log_filter()
        state.pool.start()
        jobs.start()
        psutil.cpu_percent(interval=None)  # the first reading starts the measurement
        yield
        for peer in [s for s in list(state.sessions.values()) if s.format == "webrtc"]:
            await peer.close()
        jobs.cancel_all()  # their processes stop while the workers do
        state.pool.stop()
        await jobs.stop()

    app = FastAPI(title="lipstream", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.state.lipstream = state
    app.state.jobs = jobs

    def authorize(request: Request) -> None:
        if not settings.token_ok(_bearer(request.headers.get("authorization"))):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorize)]

    @app.exception_handler(LipstreamError)
    async def lipstream_error(request: Request, exc: LipstreamError) -> JSONResponse:
        """A client's mistake is a 4xx; the server's own failure (render, worker) a 5xx."""
        return JSONResponse({"error": type(exc).__name__, "message": public_message(str(exc))},
                            status_code=http_status(exc))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok" if state.pool.alive == state.pool.size and jobs.healthy else "degraded",
            "sessions": len(state.sessions),
            "maxSessions": settings.max_sessions,
            "workers": {"alive": state.pool.alive, "total": state.pool.size},
            "jobs": {"running": jobs.healthy, "waiting": jobs.waiting()},
            "cpuPercent": psutil.cpu_percent(interval=None),
            "cpuCount": os.cpu_count(),
            "loadAverage": [round(x, 2) for x in os.getloadavg()],
            "memoryMiB": round(_tree_rss_bytes() / 2**20, 1),
            "gpu": _gpu(),
        }

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/presets")
    async def presets() -> dict:
        return {name: preset.to_dict() for name, preset in PRESETS.items()}

    @app.get("/api/avatars", dependencies=guarded)
    async def avatars() -> list[dict]:
        return _list_avatars(settings.avatars_dir)

    @app.post("/api/avatars", status_code=202, dependencies=guarded)
    async def upload_avatar(file: Annotated[UploadFile, File()], name: Annotated[str, Form()],
                            fps: Annotated[float, Form(gt=0, le=60)] = DEFAULT_FPS,
                            replace: Annotated[bool, Form()] = False) -> dict:
        if settings.avatars_dir is None:
            raise HTTPException(400, "this server has no avatars directory: start it with --avatars DIR")
        if not SAFE_NAME.fullmatch(name):
            raise HTTPException(400, "the name must be letters, digits, '.', '_' or '-' (at most 64)")
        _check_name_free(jobs, settings.avatars_dir, name, replace)
        suffix = sniff_media(await file.read(16))
        if suffix is None:
            raise HTTPException(415, "upload a photo (JPEG, PNG, WebP, BMP) or a video (MP4, MOV, MKV, WebM, AVI)")
        _check_room(jobs)
        work = jobs.new_work_dir()
        source = await _save(file, work / f"source{suffix}")
        job = jobs.submit("prepare", {"source": source, "target": settings.avatars_dir / name, "fps": fps,
                                      "name": name, "limits": settings.media_limits}, work)
        return job.public()

    @app.post("/api/avatars/preload", dependencies=guarded)
    async def preload_avatars(body: AvatarList) -> list[dict]:
        return await state.pool.preload(body.avatars)

    @app.post("/api/render", status_code=202, dependencies=guarded)
    async def render(audio: Annotated[UploadFile, File()], avatar: Annotated[str, Form()] = DEFAULT_NAME,
                     renderer: Annotated[str, Form(pattern=r"^[a-z_]{1,32}$")] = "auto",
                     driver: Annotated[str, Form(pattern=r"^[a-z_]{1,32}$")] = DEFAULT_DRIVER) -> dict:
        if not SAFE_NAME.fullmatch(avatar):
            raise HTTPException(400, "the avatar must be a name like 'default'")
        if avatar != DEFAULT_NAME and not (settings.avatars_dir and is_package(settings.avatars_dir / avatar)):
            raise HTTPException(404, f"no avatar {avatar!r} on this server (GET /api/avatars lists them)")
        _check_room(jobs)
        work = jobs.new_work_dir()
        source = await _save(audio, work / "audio.bin")
        job = jobs.submit("render", {"audio": source, "out": work / "render.mp4", "avatar": avatar,
                                     "avatars_dir": settings.avatars_dir, "renderer": renderer, "driver": driver,
                                     "max_audio_s": settings.max_audio_s}, work)
        return job.public()

    @app.get("/api/jobs/{job_id}", dependencies=guarded)
    async def job_state(job_id: str) -> dict:
        return _job(jobs, job_id).public()

    @app.delete("/api/jobs/{job_id}", dependencies=guarded)
    async def cancel_job(job_id: str) -> dict:
        job = jobs.cancel(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id[:64]!r} (jobs are kept for an hour)")
        return job.public()

    @app.get("/api/jobs/{job_id}/result", dependencies=guarded)
    async def job_result(job_id: str) -> FileResponse:
        job = _job(jobs, job_id)
        if job.kind != "render" or job.state != "done":
            raise HTTPException(409, f"job {job_id} has no video to download (state {job.state})")
        return FileResponse(job.result["path"], media_type="video/mp4", filename="lipstream.mp4")

    @app.get("/api/sessions", dependencies=guarded)
    async def sessions() -> list[dict]:
        return [{"id": key, "sessionId": c.session_id, "preset": c.preset.name, "format": c.format,
                 **c.stats.snapshot()} for key, c in list(state.sessions.items())]

    @app.post("/webrtc/offer", dependencies=guarded)
    async def webrtc_offer(offer: WebRtcOffer) -> Response:
        try:
            from lipstream.server.webrtc.peer import BadOffer, WebRtcPeer
        except ImportError:
            raise HTTPException(501, "WebRTC needs aiortc on the server: pip install 'lipstream[webrtc]'; "
                                     "the WebSocket (/ws) works without it") from None
        get_preset(offer.preset)  # NotSupportedError (400) naming the presets
        if len(state.sessions) >= settings.max_sessions:
            state.metrics.errors.labels(p.SESSION_LIMIT).inc()
            return JSONResponse({"error": p.SESSION_LIMIT, "message": f"the server is at its limit of "
                                 f"{settings.max_sessions} sessions; try again later"}, status_code=503,
                                headers={"Retry-After": str(SESSION_RETRY_AFTER_S)})
        config = SessionConfig(avatar=offer.avatar, preset=offer.preset, format="raw", width=offer.width,
                               renderer=None if settings.renderer == "auto" else settings.renderer,
                               idle_frames=True, silent_frames=True, frame_audio=True)
        peer = WebRtcPeer(state, settings.ice_server_list())
        try:
            answer = await peer.answer(offer.sdp, config)
        except BadOffer as exc:
            return JSONResponse({"error": "BAD_SDP", "message": str(exc)}, status_code=400)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type})

    @app.get("/webrtc/ice-servers", dependencies=guarded)
    async def webrtc_ice_servers() -> list[dict]:
        return settings.ice_server_list()

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        token = _bearer(ws.headers.get("authorization")) or ws.query_params.get("token")
        await Connection(ws, state).run(settings.token_ok(token))

    return app


class WebRtcOffer(BaseModel):
    """POST /webrtc/offer's body: the browser's offer and the session it asks for."""

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"]
    avatar: Annotated[str, StringConstraints(pattern=SAFE_NAME.pattern)] = DEFAULT_NAME
    preset: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = DEFAULT_PRESET
    width: int | None = Field(None, ge=MIN_SIDE_PX, le=MAX_SIDE_PX)


class AvatarList(BaseModel):
    avatars: list[Annotated[str, StringConstraints(pattern=SAFE_NAME.pattern)]] = Field(min_length=1, max_length=64)


def run_server(host: str = "127.0.0.1", port: int = 8000, avatars_dir: str | os.PathLike | None = None,
               log_level: str = "info", **settings) -> None:
    """Serve until interrupted (what `lipstream serve` runs). `settings` are ServerSettings' fields
    (max_sessions, token, renderer, workers, idle_timeout_s, the limits); token None or "" = no auth."""
    import uvicorn

    if avatars_dir is not None:
        Path(avatars_dir).mkdir(parents=True, exist_ok=True)
    settings["token"] = settings.get("token") or None
    app = create_app(ServerSettings(avatars_dir=Path(avatars_dir) if avatars_dir else None, **settings))
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                http=HeaderTimeoutH11Protocol, ws=BoundedWebSocketProtocol, ws_max_size=MAX_MESSAGE_BYTES,
                ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_keep_alive=KEEP_ALIVE_S,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def http_status(exc: LipstreamError) -> int:
    """400 for errors the client can fix, 500 for the server's own (RenderFailedError, InternalError)."""
    return 400 if exc.client_fault else 500


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def _check_room(jobs: JobRunner) -> None:
    if jobs.waiting() >= MAX_WAITING_JOBS:
        raise HTTPException(429, f"{MAX_WAITING_JOBS} jobs are already waiting; try again in a minute")


def _check_name_free(jobs: JobRunner, avatars_dir: Path, name: str, replace: bool) -> None:
    """Avatar names are owned: `default` is the server's, another one is replaced only on request."""
    if name == DEFAULT_NAME:
        raise HTTPException(403, f"'{DEFAULT_NAME}' is the server's own avatar; choose another name")
    if jobs.pending("prepare", "name", name):
        raise HTTPException(409, f"an avatar named {name!r} is being prepared; wait for that job or choose another name")
    if (avatars_dir / name).exists() and not replace:
        raise HTTPException(409, f"an avatar named {name!r} exists; send replace=true to replace it")


def _job(jobs: JobRunner, job_id: str):
    job = jobs.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id[:64]!r} (jobs are kept for an hour)")
    return job


async def _save(upload: UploadFile, path: Path) -> Path:
    """Copy the upload into its job's folder (the folder goes if that fails)."""
    try:
        await upload.seek(0)
        with path.open("wb") as out:
            while chunk := await upload.read(COPY_CHUNK_BYTES):
                out.write(chunk)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return path


def _list_avatars(avatars_dir: Path | None) -> list[dict]:
    found = [{"name": DEFAULT_NAME, "kind": "image", "bundled": True}]
    if avatars_dir is None or not avatars_dir.is_dir():
        return found
    for folder in sorted(avatars_dir.iterdir()):
        if folder.name.startswith(".") or not is_package(folder):
            continue
        try:
            manifest = read_manifest(folder)
        except LipstreamError:
            continue
        entry = {"name": folder.name, "kind": manifest["kind"], "width": manifest["width"],
                 "height": manifest["height"], "fps": manifest["fps"], "bundled": False}
        found = [a for a in found if a["name"] != folder.name] + [entry]
    return found


def _tree_rss_bytes() -> int:
    """Resident memory of this process and its children (the workers)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def _gpu() -> dict | None:
    """The GPU onnxruntime can use, if any (lipstream's own nets run on it)."""
    with contextlib.suppress(Exception):
        import onnxruntime

        cpu_only = ("CPUExecutionProvider", "AzureExecutionProvider")
        gpus = [p for p in onnxruntime.get_available_providers() if p not in cpu_only]
        return {"providers": gpus} if gpus else None
    return None


__all__ = ["create_app", "run_server"]
