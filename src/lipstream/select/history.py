"""What each backend did in real use: a rolling record of sessions' and jobs' latency and success.

The profiles say what a backend measured once, on a bench; the history says how it has been
doing since, here: the last WINDOW outcomes per backend (`history.json` beside profiles.json),
each a session that ended (its p95 added latency; ok unless it fell back from its first
renderer) or an offline render, a server job or a batch clip (ok, or failed with
RenderFailedError; no latency). `choose` weighs
a backend with at least MIN_RECORDS outcomes by its success rate and says so in its reason.
Writers are several processes (server, workers, jobs): each update is made under a file lock
and written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipstream.select.profiles import default_profiles_path

log = logging.getLogger(__name__)

FILE_NAME = "history.json"
SCHEMA_VERSION = 1
WINDOW = 100  # outcomes kept per backend
MIN_RECORDS = 5  # outcomes before the history weighs in


@dataclass(frozen=True)
class BackendHistory:
    """A backend's last outcomes: how many, the share that succeeded, and the mean and 95th
    percentile (ms) of the sessions' p95 added latency."""

    count: int
    ok_rate: float
    latency_mean_ms: float | None
    latency_p95_ms: float | None

    @property
    def counts(self) -> bool:
        return self.count >= MIN_RECORDS

    def describe(self) -> str:
        text = f"{self.count} runs, {self.ok_rate:.0%} ok"
        if self.latency_mean_ms is not None:
            text += f", latency mean {self.latency_mean_ms:.0f} ms, p95 {self.latency_p95_ms:.0f} ms"
        return text


def history_path() -> Path:
    """history.json beside this machine's profiles.json ($LIPSTREAM_PROFILES or the cache)."""
    return default_profiles_path().with_name(FILE_NAME)


def record_outcome(backend: str, latency_ms: float | None, ok: bool, source: str, path: Path | None = None,
                   now: float | None = None) -> None:
    """Add one outcome (`source`: "session" or "job") to `backend`'s rolling record; a history
    that can't be written is logged, never an error for the session or job it describes."""
    path = Path(path) if path else history_path()
    row = [round(time.time() if now is None else now, 3), None if latency_ms is None else round(latency_ms, 1),
           bool(ok), source]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = _read(path)
            rows = data["backends"].setdefault(backend, [])
            rows.append(row)
            del rows[:-WINDOW]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data) + "\n")
            tmp.replace(path)
    except OSError as exc:
        log.warning("backend history not written (%s): %s", path, exc)


@contextlib.contextmanager
def record_render(asked: str | None, source: str):
    """Around an offline render: `record(renderer)` after it records a success for the renderer
    that made it; a RenderFailedError records a failure of the renderer asked for (when one
    was named). Failures of the inputs are not the backend's and are not recorded."""
    from lipstream.errors import RenderFailedError

    def record(renderer: str) -> None:
        record_outcome(renderer, None, True, source)

    try:
        yield record
    except RenderFailedError:
        if asked and asked != "auto":
            record_outcome(asked, None, False, source)
        raise


def load_history(path: Path | None = None) -> dict[str, BackendHistory]:
    """Each backend's record; {} when there is no history yet (or it is unreadable: logged)."""
    path = Path(path) if path else history_path()
    history = {}
    for backend, rows in _read(path)["backends"].items():
        if not rows:
            continue
        latencies = [r[1] for r in rows if r[1] is not None]
        history[backend] = BackendHistory(
            len(rows), sum(bool(r[2]) for r in rows) / len(rows),
            float(np.mean(latencies)) if latencies else None,
            float(np.percentile(latencies, 95)) if latencies else None)
    return history


def _read(path: Path) -> dict:
    empty = {"schema_version": SCHEMA_VERSION, "backends": {}}
    if not path.is_file():
        return empty
    with contextlib.suppress(ValueError, OSError):
        data = json.loads(path.read_text())
        if data.get("schema_version") == SCHEMA_VERSION and isinstance(data.get("backends"), dict):
            return data
    log.warning("backend history %s is unreadable or from another version; starting afresh", path)
    return empty
