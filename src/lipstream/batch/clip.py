"""Rendering one manifest clip where a batch worker runs it, into a result row.

A `ClipRenderer` lives as long as its worker (a process or a Ray actor) and keeps the avatars it
loaded (lipstream.store), so clips of the same avatar don't load it again. Every failure becomes
a row; the batch goes on.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import fsspec

from lipstream.batch.manifest import Clip
from lipstream.batch.output import Destination
from lipstream.errors import BadAudioError, LipstreamError
from lipstream.store import DEFAULT_CACHE_MIB, AvatarStore
from lipstream.store.disk import is_remote


class ClipRenderer:
    """Renders clips to `out` (a Destination's URI); `evaluate` adds each output's A/V offset."""

    def __init__(self, out: str, avatars: str | None = None, cache_mib: float = DEFAULT_CACHE_MIB,
                 evaluate: bool = False):
        import cv2

        cv2.setNumThreads(1)  # one worker per core: more threads only contend
        self.destination = Destination(out)
        self.store = AvatarStore(avatars, cache_mib)
        self.evaluate = evaluate

    def render(self, clip: Clip) -> dict:
        """{"id", "ok", "seconds", "output", "renderer", "frames", "offset_ms"} or {"id", "ok": False, "error", "kind"}."""
        from lipstream.offline import RenderOptions, render_file
        from lipstream.select.history import record_render

        started = time.perf_counter()
        row: dict = {"id": clip.id}
        try:
            with _local_audio(clip.audio) as audio:
                package = self.store.get(clip.avatar)
                work = self.destination.work_path(clip.id)
                with record_render(clip.options.get("renderer"), "job") as record:
                    summary = render_file(package, audio, work, RenderOptions(**clip.options))
                    record(summary.renderer)
                if self.evaluate:
                    from lipstream.evaluate import evaluate_video_sync

                    row["offset_ms"] = round(evaluate_video_sync(work).offset_ms, 1)
                self.destination.commit(work, clip.id)
            row.update(ok=True, output=self.destination.name(clip.id), renderer=summary.renderer,
                       frames=summary.frames, duration_s=round(summary.duration_s, 3))
        except LipstreamError as exc:
            row.update(ok=False, error=str(exc), kind=type(exc).__name__)
        except Exception as exc:  # a bug must not end the batch: it becomes the clip's row
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}", kind="InternalError")
        row["seconds"] = round(time.perf_counter() - started, 3)
        return row


class _local_audio:
    """The clip's audio as a local path: a URI is downloaded to a temporary folder first."""

    def __init__(self, spec: str):
        self.spec, self.folder = spec, None

    def __enter__(self) -> str:
        if not is_remote(self.spec) or self.spec.startswith("file://"):
            path = self.spec.removeprefix("file://")
            if not Path(path).is_file():
                raise BadAudioError(f"audio {self.spec} not found")
            return path
        self.folder = Path(tempfile.mkdtemp(prefix="lipstream-audio-"))
        target = self.folder / Path(self.spec.split("?")[0]).name
        try:
            fs, path = fsspec.core.url_to_fs(self.spec)
            fs.get_file(path, str(target))
        except (OSError, ValueError, ImportError) as exc:
            raise BadAudioError(f"can't download audio {self.spec}: {exc}") from None
        return str(target)

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
