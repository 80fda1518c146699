"""`lipstream bench batch`: issue 14's batch bar, both ways in one run.

CLIPS held-out clips of CLIP_S seconds, cut one after another from the speech in `media`
(bytedance_LatentSync_demo1_audio.wav's first 6 s, then TMElyralab_MuseTalk_eng.wav's), on the SadTalker `happy.png`
portrait (prepared once, before either run), warp renderer: rendered by one process one after
another (a ClipRenderer in this process, as a `--workers 1` batch's worker would), then by
`lipstream batch --ray local --workers 2` (run_batch here, Ray started and stopped inside the
timing; this process renders clips beside one actor, from the start while Ray starts:
`rendered_here` counts them), then 2 actors on a Ray started before the timing (`ray_running`, as `--ray ADDRESS` finds a
cluster running). Each run's wall time and per-clip seconds, the outputs' names, and `lipstream eval`'s
offset and grade of every Ray output.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lipstream.bench.machine import machine_info

CLIPS = 8
CLIP_S = 6.0
SOURCES = ("TMElyralab_MuseTalk_eng.wav", "bytedance_LatentSync_demo1_audio.wav")
PORTRAIT = "OpenTalker_SadTalker_happy.png"
RAY_WORKERS = 2
SYNC_BAR_MS = 40.0


def make_clips(media: Path, folder: Path) -> tuple[Path, Path]:
    """The manifest (CLIPS clips, id clip-N) and the prepared portrait, written under `folder`."""
    import soundfile as sf

    from lipstream.audio.io import load_audio
    from lipstream.avatar.prepare import prepare

    avatar = prepare(media / PORTRAIT, folder / "happy")
    lines = []
    for name in reversed(SOURCES):  # the short one first, so that both give clips
        speech = load_audio(media / name, 16000)
        step = int(CLIP_S * 16000)
        for start in range(0, len(speech) - step + 1, step):
            if len(lines) == CLIPS:
                break
            n = len(lines)
            sf.write(folder / f"clip-{n}.wav", np.asarray(speech[start : start + step], np.float32), 16000)
            lines.append({"id": f"clip-{n}", "audio": f"clip-{n}.wav", "avatar": str(avatar), "renderer": "warp"})
    if len(lines) < CLIPS:
        raise ValueError(f"{' and '.join(SOURCES)} hold fewer than {CLIPS} clips of {CLIP_S:g} s")
    manifest = folder / "clips.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest, avatar


def _on_running_ray(clips: list, out: str) -> dict:
    """The same batch on a Ray already running (started before the timing, as `--ray ADDRESS`
    finds a cluster): its wall time and per-clip seconds."""
    import ray

    from lipstream.batch import run_batch
    from lipstream.ray_runtime import LOCAL, connect

    connect(LOCAL, num_cpus=RAY_WORKERS, log_to_driver=False)  # as run_batch's local Ray
    try:
        started = time.perf_counter()
        rows = run_batch(clips, out, ray_address=ray.get_runtime_context().gcs_address, workers=RAY_WORKERS)
        return {"workers": RAY_WORKERS, "wall_s": round(time.perf_counter() - started, 1),
                "clip_seconds": [r.get("seconds") for r in rows], "ok": sum(r["ok"] for r in rows)}
    finally:
        ray.shutdown()


def run_batch_bench(media: Path, out: Path | None = None) -> dict:
    """Both runs and the evaluation (module docstring); writes the JSON to `out` if given."""
    from lipstream.batch import read_manifest, run_batch
    from lipstream.batch.clip import ClipRenderer
    from lipstream.evaluate import evaluate_video_sync

    results: dict = {"machine": machine_info(), "clips": CLIPS, "clip_s": CLIP_S, "renderer": "warp",
                     "load_avg_1min_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="lipstream-bench-batch-") as tmp:
        folder = Path(tmp)
        manifest, _ = make_clips(Path(media), folder)
        clips = read_manifest(manifest)

        started = time.perf_counter()
        renderer = ClipRenderer(str(folder / "one"))
        rows = [renderer.render(clip) for clip in clips]
        results["one_process"] = {"wall_s": round(time.perf_counter() - started, 1),
                                  "clip_seconds": [r["seconds"] for r in rows], "ok": sum(r["ok"] for r in rows)}

        started = time.perf_counter()
        rows = run_batch(clips, str(folder / "ray"), ray_address="local", workers=RAY_WORKERS)
        results["ray"] = {"workers": RAY_WORKERS, "wall_s": round(time.perf_counter() - started, 1),
                          "clip_seconds": [r.get("seconds") for r in rows], "ok": sum(r["ok"] for r in rows),
                          "errors": [r["error"] for r in rows if not r["ok"]],
                          "rendered_here": sum(r.get("worker") == "here" for r in rows)}
        results["ray_running"] = _on_running_ray(clips, str(folder / "ray-running"))
        outputs = sorted(p.name for p in (folder / "ray").glob("*.mp4"))
        results["ray"]["outputs"] = outputs
        evals = {}
        for clip in clips:
            path = folder / "ray" / f"{clip.id}.mp4"
            if path.is_file():
                metrics = evaluate_video_sync(path)
                evals[clip.id] = {"offset_ms": round(metrics.offset_ms, 1), "grade": metrics.grade}
        results["ray"]["eval"] = evals
    results["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    results["bar"] = {
        "outputs_named_by_id": outputs == sorted(f"clip-{n}.mp4" for n in range(CLIPS)),
        "in_sync_40ms": len(evals) == CLIPS and all(abs(e["offset_ms"]) <= SYNC_BAR_MS for e in evals.values()),
        "ray_no_slower": results["ray"]["wall_s"] <= results["one_process"]["wall_s"],
    }
    results["bar"]["holds"] = all(results["bar"].values())
    results["bar"]["note"] = "ray_no_slower compares `ray` (Ray started and stopped inside the timing) with one process"
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results
