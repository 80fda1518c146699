"""Sync evaluation of any talking-face video: A/V offset in ms, metrics, grades, reports, fixes.

```python
from lipstream.evaluate import evaluate_video_sync, generate_sync_report
metrics = evaluate_video_sync("talk.mp4")            # or audio="reference.wav"
print(metrics.offset_ms, metrics.grade)              # + = audio early (SyncNet's sign)
generate_sync_report(metrics, "reports/")
```
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from lipstream.errors import BadVideoError, NotSupportedError
from lipstream.evaluate import comparison
from lipstream.evaluate.comparison import compare
from lipstream.evaluate.fix import write_realigned
from lipstream.evaluate.measure import evaluate_clip, evaluate_video_sync
from lipstream.evaluate.metrics import SIGN_CONVENTION, SyncMetrics, SyncWindow, grade
from lipstream.evaluate.report import generate_sync_report
from lipstream.evaluate.video import Clip, read_clip

__all__ = [
    "SIGN_CONVENTION",
    "BadVideoError",
    "Clip",
    "SyncMetrics",
    "SyncWindow",
    "compare",
    "evaluate_clip",
    "evaluate_video_sync",
    "generate_sync_report",
    "grade",
    "read_clip",
    "run_eval",
    "write_realigned",
]

PathLike = str | os.PathLike


def run_eval(
    videos: Sequence[PathLike],
    audio: PathLike | None = None,
    out_dir: PathLike | None = None,
    compare: bool = False,
    fix: PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """`lipstream eval`: measure each video, write reports to out_dir, optionally compare them
    or write a fixed copy of the one video; one summary line per video through `echo`.

    Returns the exit code (0: measured). User errors raise LipstreamError subclasses
    (BadAudioError 3, BadVideoError 7, NotSupportedError 5, RenderFailedError 6).
    """
    if not videos:
        raise NotSupportedError("give at least one video to evaluate")
    if fix is not None and len(videos) != 1:
        raise NotSupportedError("--fix writes a corrected copy of one video; give exactly one")
    if compare and out_dir is None:
        out_dir = "."
    results = []
    for video in videos:
        metrics = evaluate_video_sync(video, audio)
        results.append(metrics)
        echo(summary_line(metrics))
        for note in metrics.notes:
            echo(f"  note: {note}")
        if out_dir is not None:
            files = generate_sync_report(metrics, out_dir)
            echo(f"  report: {files.markdown}")
    if compare:
        files = comparison.compare(results, out_dir)
        echo(f"comparison: {files.markdown}")
    if fix is not None:
        fixed = write_realigned(videos[0], fix, results[0].offset_ms, audio)
        check = evaluate_video_sync(fixed)
        echo(f"fixed copy: {fixed} (audio moved {_moved(results[0].offset_ms)}); re-measured: {summary_line(check)}")
    return 0


def summary_line(metrics: SyncMetrics) -> str:
    """One line: video, offset with its meaning, confidence, grade."""
    m = metrics
    if abs(m.offset_ms) < 0.5:
        meaning = "in sync"
    else:
        meaning = f"audio {'early' if m.offset_ms > 0 else 'late'}"
    return (
        f"{Path(m.video).name}: offset {m.offset_ms:+.0f} ms ({meaning}), confidence {m.confidence:.2f}, "
        f"grade {m.grade}, violation rate {m.violation_rate:.2f}"
    )


def _moved(offset_ms: float) -> str:
    return f"{abs(offset_ms):.0f} ms {'later' if offset_ms > 0 else 'earlier'}"
