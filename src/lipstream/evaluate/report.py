"""Reports of one video's sync: JSON (everything), Markdown (a summary), PNG plots (matplotlib).

Plots are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, so no GUI backend
and no global pyplot state is touched.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lipstream import __version__
from lipstream.evaluate.metrics import (
    ACCEPTABLE_LAG_MS,
    ACCEPTABLE_LEAD_MS,
    DETECTABLE_LAG_MS,
    DETECTABLE_LEAD_MS,
    GRADE_WORDS,
    SyncMetrics,
)
from lipstream.evaluate.signals import PAIR_NAMES

METHOD = (
    "Lip landmarks (MediaPipe face mesh) against audio features, no model fitted: for each "
    "candidate offset, the correlation of three lip/audio signal pairs (openness: log inner-lip "
    "aperture and closure vs F1 openness; spreading: mouth width vs F2 band ratio; opening "
    "speed: their time derivatives), averaged; the offset is the peak, the confidence the peak "
    "minus the median of the curve."
)
BAND_COLOUR = "#d9f0d9"


@dataclass
class ReportFiles:
    """Paths of the files one report wrote."""

    json: Path
    markdown: Path
    offset_plot: Path
    curve_plot: Path
    alignment_plot: Path


def generate_sync_report(metrics: SyncMetrics, out_dir: str | Path) -> ReportFiles:
    """Write `<video stem>_sync.{json,md}` and three PNG plots into out_dir (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(metrics.video).stem
    files = ReportFiles(
        json=out / f"{stem}_sync.json",
        markdown=out / f"{stem}_sync.md",
        offset_plot=out / f"{stem}_offset_over_time.png",
        curve_plot=out / f"{stem}_score_curve.png",
        alignment_plot=out / f"{stem}_alignment.png",
    )
    files.json.write_text(json.dumps(report_dict(metrics), indent=2) + "\n")
    files.markdown.write_text(markdown_summary(metrics, files))
    plot_offset_over_time(metrics, files.offset_plot)
    plot_score_curve(metrics, files.curve_plot)
    plot_alignment(metrics, files.alignment_plot)
    return files


def report_dict(metrics: SyncMetrics) -> dict:
    """Everything measured, JSON-ready; `offset_ms` (whole clip) and the sign convention on top."""
    return {
        "offset_ms": round(metrics.offset_ms, 1),
        "sign_convention": metrics.sign_convention,
        "confidence": round(metrics.confidence, 3),
        "grade": metrics.grade,
        "video": metrics.video,
        "audio": metrics.audio,
        "metrics": {
            "average_offset_ms": round(metrics.average_offset_ms, 1),
            "max_offset_ms": round(metrics.max_offset_ms, 1),
            "sync_accuracy": round(metrics.sync_accuracy, 3),
            "temporal_consistency": round(metrics.temporal_consistency, 3),
            "offset_spread_ms": round(metrics.offset_spread_ms, 1),
            "violation_rate": round(metrics.violation_rate, 3),
            "peak_score": round(metrics.peak_score, 3),
        },
        "itu_r_bt1359_ms": {
            "detectable_audio_lead": DETECTABLE_LEAD_MS,
            "detectable_audio_lag": DETECTABLE_LAG_MS,
            "acceptable_audio_lead": ACCEPTABLE_LEAD_MS,
            "acceptable_audio_lag": ACCEPTABLE_LAG_MS,
        },
        "clip": {
            "duration_s": round(metrics.duration_s, 3),
            "fps": round(metrics.fps, 3),
            "variable_frame_rate": metrics.variable_frame_rate,
            "audio_start_s": round(metrics.audio_start_s, 4),
            "face_share": round(metrics.face_share, 3),
            "speech_share": round(metrics.speech_share, 3),
        },
        "windows": [asdict(w) for w in metrics.windows],
        "score_curve": {
            "offset_ms": metrics.curve_offsets_ms.round(1).tolist(),
            "score": metrics.curve_scores.round(4).tolist(),
        },
        "notes": metrics.notes,
        "method": METHOD,
        "signal_pairs": list(PAIR_NAMES),
        "lipstream_version": __version__,
    }


def markdown_summary(metrics: SyncMetrics, files: ReportFiles | None = None) -> str:
    """A human-readable summary: headline, metrics table, windows table, notes, plots."""
    m = metrics
    lines = [
        f"# Lip sync: {Path(m.video).name}",
        "",
        f"**Offset {_signed(m.offset_ms)} ms** ({_describe(m.offset_ms)}), confidence {m.confidence:.2f}, "
        f"grade **{m.grade}** ({GRADE_WORDS[m.grade]}).",
        "",
        f"Sign: {m.sign_convention}",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| offset, whole clip | {_signed(m.offset_ms)} ms |",
        f"| average offset (median of windows) | {_signed(m.average_offset_ms)} ms |",
        f"| maximum offset (window farthest from 0) | {_signed(m.max_offset_ms)} ms |",
        f"| sync accuracy (0-1) | {m.sync_accuracy:.2f} |",
        f"| temporal consistency (windows within 40 ms of the median) | {m.temporal_consistency:.2f} |",
        f"| spread of window offsets (std) | {m.offset_spread_ms:.0f} ms |",
        f"| violation rate (ITU-R BT.1359: audio > 45 ms early or > 125 ms late) | {m.violation_rate:.2f} |",
        f"| confidence (peak - median of the score curve) | {m.confidence:.2f} |",
        "",
        f"Audio: {m.audio}. Video: {m.duration_s:.2f} s at {m.fps:.2f} fps"
        f"{' (variable frame rate)' if m.variable_frame_rate else ''}; face in {100 * m.face_share:.0f}% "
        f"of frames, speech in {100 * m.speech_share:.0f}% of the audio.",
        "",
        "## Windows",
        "",
        "| start s | end s | offset ms | confidence | skipped because |",
        "| --- | --- | --- | --- | --- |",
    ]
    for w in m.windows:
        offset = "" if w.offset_ms is None else _signed(w.offset_ms)
        confidence = "" if w.confidence is None else f"{w.confidence:.2f}"
        lines.append(f"| {w.start_s:.1f} | {w.end_s:.1f} | {offset} | {confidence} | {w.skipped or ''} |")
    if m.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in m.notes]
    if files is not None:
        lines += ["", "## Plots", ""] + [
            f"![{title}]({path.name})"
            for title, path in (
                ("offset over time", files.offset_plot),
                ("score vs offset", files.curve_plot),
                ("lips vs audio at the found offset", files.alignment_plot),
            )
        ]
    return "\n".join(lines) + "\n"


def plot_offset_over_time(metrics: SyncMetrics, path: Path) -> None:
    """Window offsets against time, the ITU detectability band, skipped windows marked."""
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.axhspan(-DETECTABLE_LAG_MS, DETECTABLE_LEAD_MS, color=BAND_COLOUR, label="ITU-R BT.1359 undetectable")
    for y in (-ACCEPTABLE_LAG_MS, ACCEPTABLE_LEAD_MS):
        ax.axhline(y, color="tab:orange", lw=0.8, ls=":")
    ax.axhline(metrics.offset_ms, color="tab:blue", ls="--", lw=1, label=f"whole clip {_signed(metrics.offset_ms)} ms")
    done = metrics.measured_windows
    centres = [(w.start_s + w.end_s) / 2 for w in done]
    ax.plot(centres, [w.offset_ms for w in done], "o-", color="tab:blue", label="2 s windows")
    skipped = [(w.start_s + w.end_s) / 2 for w in metrics.windows if w.skipped is not None]
    if skipped:
        ax.plot(skipped, np.full(len(skipped), -ACCEPTABLE_LAG_MS - 40), "x", color="grey", label="skipped")
    ax.set_xlim(0, metrics.duration_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("offset (ms, + = audio early)")
    ax.set_title(f"{Path(metrics.video).name}: offset over time")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def plot_score_curve(metrics: SyncMetrics, path: Path) -> None:
    """Score (mean correlation of the signal pairs) against candidate offset, the peak marked."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(-DETECTABLE_LAG_MS, DETECTABLE_LEAD_MS, color=BAND_COLOUR)
    ax.plot(metrics.curve_offsets_ms, metrics.curve_scores, color="tab:blue")
    ax.axhline(float(np.median(metrics.curve_scores)), color="grey", ls=":", label="median")
    ax.axvline(metrics.offset_ms, color="tab:red", ls="--", label=f"peak {_signed(metrics.offset_ms)} ms")
    ax.set_xlabel("candidate offset (ms, + = audio early)")
    ax.set_ylabel("score (mean correlation)")
    ax.set_title(f"score vs offset, confidence {metrics.confidence:.2f}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def plot_alignment(metrics: SyncMetrics, path: Path) -> None:
    """Lip openness and the audio's F1 openness over time, the audio moved by the found offset."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(metrics.trace_times_s, metrics.trace_lips, color="tab:red", lw=1.2, label="lip openness")
    moved = f"{abs(metrics.offset_ms):.0f} ms {'later' if metrics.offset_ms > 0 else 'earlier'}"
    ax.plot(metrics.trace_times_s, metrics.trace_audio, color="black", lw=1, alpha=0.7,
            label=f"audio openness, played {moved}")
    ax.set_xlim(0, metrics.duration_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("standardised")
    ax.set_title("lips against audio at the found offset")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def _signed(ms: float) -> str:
    return f"{ms:+.0f}"


def _describe(offset_ms: float) -> str:
    if abs(offset_ms) < 0.5:
        return "in sync"
    return f"audio {'early' if offset_ms > 0 else 'late'} by {abs(offset_ms):.0f} ms"
