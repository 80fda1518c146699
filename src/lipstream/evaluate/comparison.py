"""Several videos side by side: one table (Markdown + JSON) and one plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lipstream.evaluate.metrics import DETECTABLE_LAG_MS, DETECTABLE_LEAD_MS, SIGN_CONVENTION, SyncMetrics
from lipstream.evaluate.report import BAND_COLOUR

# (SyncMetrics attribute, column title, format)
COLUMNS = (
    ("offset_ms", "offset ms", "{:+.0f}"),
    ("confidence", "confidence", "{:.2f}"),
    ("average_offset_ms", "average ms", "{:+.0f}"),
    ("max_offset_ms", "max ms", "{:+.0f}"),
    ("sync_accuracy", "accuracy", "{:.2f}"),
    ("temporal_consistency", "consistency", "{:.2f}"),
    ("violation_rate", "violation rate", "{:.2f}"),
    ("grade", "grade", "{}"),
)


@dataclass
class ComparisonFiles:
    """Paths of the files a comparison wrote."""

    json: Path
    markdown: Path
    plot: Path


def compare(results: list[SyncMetrics], out_dir: str | Path) -> ComparisonFiles:
    """Write sync_comparison.{json,md,png} into out_dir: one row / one bar per video."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ComparisonFiles(out / "sync_comparison.json", out / "sync_comparison.md", out / "sync_comparison.png")
    rows = [comparison_row(m) for m in results]
    files.json.write_text(json.dumps({"sign_convention": SIGN_CONVENTION, "videos": rows}, indent=2) + "\n")
    footer = f"\nSign: {SIGN_CONVENTION}\n\n![comparison]({files.plot.name})\n"
    files.markdown.write_text(comparison_table(rows) + footer)
    _plot(results, files.plot)
    return files


def comparison_row(metrics: SyncMetrics) -> dict:
    """One video's row: its name and the COLUMNS figures (rounded)."""
    row: dict = {"video": Path(metrics.video).name}
    for key, _, _ in COLUMNS:
        value = getattr(metrics, key)
        row[key] = value if isinstance(value, str) else round(float(value), 3)
    return row


def comparison_table(rows: list[dict]) -> str:
    """Markdown table of comparison rows, best |offset| first."""
    lines = [
        "| video | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "| --- |" + " --- |" * len(COLUMNS),
    ]
    for row in sorted(rows, key=lambda r: abs(r["offset_ms"])):
        cells = [row["video"]] + [form.format(row[key]) for key, _, form in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: list[SyncMetrics], path: Path) -> None:
    """Horizontal bars of the whole-clip offsets, window spread as error bars, ITU band shaded."""
    names = [Path(m.video).name for m in results]
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(results)), layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(-DETECTABLE_LAG_MS, DETECTABLE_LEAD_MS, color=BAND_COLOUR, label="ITU-R BT.1359 undetectable")
    y = np.arange(len(results))
    ax.barh(y, [m.offset_ms for m in results], xerr=[m.offset_spread_ms for m in results],
            color="tab:blue", alpha=0.8, capsize=3)
    for yi, m in zip(y, results, strict=True):
        ax.annotate(f" {m.grade} ({m.confidence:.2f})", (m.offset_ms, yi), va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("offset (ms, + = audio early); error bar: spread over windows")
    ax.set_title("lip sync by video (grade, confidence)")
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=100)
