"""Where a batch writes: a local folder or a URI prefix (fsspec), under fixed names.

    OUT/ID.mp4          one per clip, appearing only when complete (a local rename, or one
                        object PUT), so a re-run skips what is there and nothing half-written is
    OUT/results.jsonl   one row per clip of the last run (written whole at the end)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import fsspec

from lipstream.errors import RenderFailedError
from lipstream.store.disk import is_remote

RESULTS = "results.jsonl"


class Destination:
    """The output folder or URI prefix of a batch; `storage_options` go to fsspec."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = str(uri).rstrip("/")
        self.remote = is_remote(self.uri) and not self.uri.startswith("file://")
        if self.remote:
            self.fs, self.base = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        else:
            self.fs, self.base = None, self.uri.removeprefix("file://")
            try:
                Path(self.base).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RenderFailedError(f"can't make the output folder {self.base}: {exc}") from None

    def name(self, clip_id: str) -> str:
        """Where clip `clip_id`'s video goes (a path or URI)."""
        return f"{self.uri}/{clip_id}.mp4"

    def exists(self, clip_id: str) -> bool:
        if self.remote:
            return self.fs.exists(f"{self.base}/{clip_id}.mp4")
        return (Path(self.base) / f"{clip_id}.mp4").is_file()

    def work_path(self, clip_id: str) -> Path:
        """Where to render before `commit`: the final file itself when local (render_file writes
        atomically), else a temporary file."""
        if not self.remote:
            return Path(self.base) / f"{clip_id}.mp4"
        return Path(tempfile.mkdtemp(prefix="lipstream-batch-")) / f"{clip_id}.mp4"

    def commit(self, work: Path, clip_id: str) -> None:
        """Publish a rendered file under its fixed name (one PUT for object storage)."""
        if not self.remote:
            return
        try:
            self.fs.put_file(str(work), f"{self.base}/{clip_id}.mp4")
        except OSError as exc:
            raise RenderFailedError(f"can't upload {clip_id}.mp4 to {self.uri}: {exc}") from None
        finally:
            work.unlink(missing_ok=True)
            work.parent.rmdir()

    def write_results(self, rows: list[dict]) -> str:
        data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
        if self.remote:
            self.fs.pipe_file(f"{self.base}/{RESULTS}", data)
        else:
            partial = Path(self.base) / f".{RESULTS}.{os.getpid()}.partial"
            partial.write_bytes(data)
            os.replace(partial, Path(self.base) / RESULTS)
        return f"{self.uri}/{RESULTS}"
