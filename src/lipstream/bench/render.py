"""`lipstream bench render`: per-stage speed, fps and peak memory of the offline pipeline.

Measures on the bundled avatar and a 60 s clip made from the bundled speech:
- render-only fps of each renderer at the output size (warp and static on the photo; bank on a
  60 s video avatar that this benchmark first makes by rendering the photo talking);
- a whole offline render (decode, features + drive, render, encode) as a multiple of real time;
- peak resident memory of rendering the 60 s video avatar, in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.io import load_audio
from lipstream.avatar.package import AvatarPackage, load_package
from lipstream.avatar.prepare import prepare
from lipstream.avatar.resolve import bundled_asset, resolve_avatar
from lipstream.bench.machine import machine_info
from lipstream.motion.drivers import DEFAULT_DRIVER, get_driver
from lipstream.offline import RenderOptions, render_file
from lipstream.render.base import create_renderer


def looped_speech(seconds: float) -> np.ndarray:
    """The bundled speech repeated to `seconds` of float32 16 kHz audio."""
    speech = load_audio(bundled_asset("speech.wav"))
    n = int(seconds * SAMPLE_RATE)
    return np.resize(speech, n).astype(np.float32)


def renderer_fps(avatar: AvatarPackage, renderer: str, audio: np.ndarray, fps: float, frames: int) -> dict:
    """Frames per second of `renderer` alone over the first `frames` frames of a driven track."""
    track = get_driver(DEFAULT_DRIVER, fps).drive(audio)
    r = create_renderer(renderer, avatar)
    values = track.values[:frames]
    r.render_frame(0, values[0])  # warm-up: lazy allocations and caches
    start = time.perf_counter()
    per_frame = []
    for k, row in enumerate(values):
        t = time.perf_counter()
        r.render_frame(k, row)
        per_frame.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return {
        "renderer": renderer,
        "frames": len(values),
        "size": list(avatar.size),
        "fps": round(len(values) / total, 1),
        "ms_per_frame_p50": round(1e3 * float(np.median(per_frame)), 2),
        "ms_per_frame_p95": round(1e3 * float(np.percentile(per_frame, 95)), 2),
    }


def render_in_fresh_process(avatar_dir: Path, audio_path: Path, out: Path, renderer: str) -> tuple[float, float]:
    """(peak resident memory in MiB, wall seconds) of `lipstream render` in a fresh process."""
    code = ("import sys; from lipstream.cli import main; from lipstream.bench.machine import peak_rss_mib;\n"
            "sys.argv = sys.argv[1:]\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(peak_rss_mib())")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, "lipstream", "render", "--avatar", str(avatar_dir), "--audio", str(audio_path),
         "-o", str(out), "--renderer", renderer], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return float(result.stdout.strip().splitlines()[-1]), wall


def run_render_bench(seconds: float = 60.0, fps: float = 25.0, frames: int = 250, work: Path | None = None) -> dict:
    """Run every measurement; returns the results dict (see module docstring)."""
    work = Path(work or tempfile.mkdtemp(prefix="lipstream-bench-"))
    photo = resolve_avatar("default")
    audio = looped_speech(seconds)
    audio_path = work / "speech.wav"
    _write_wav(audio_path, audio)
    results: dict = {"machine": machine_info(), "seconds": seconds, "fps": fps, "driver": DEFAULT_DRIVER}
    results["renderers"] = [renderer_fps(photo, name, audio, fps, frames) for name in ("static", "warp")]

    start = time.perf_counter()
    summary = render_file(photo, audio_path, work / "photo.mp4", RenderOptions(fps=fps))
    wall = time.perf_counter() - start
    results["offline_render"] = {
        "avatar": "default (photo)",
        "renderer": summary.renderer,
        "size": list(summary.size),
        "frames": summary.frames,
        "wall_s": round(wall, 2),
        "x_real_time": round(seconds / wall, 2),
        "stage_ms_per_frame": {k: round(v / summary.frames, 2) for k, v in summary.stage_ms.items()},
    }

    start = time.perf_counter()
    video = load_package(prepare(work / "photo.mp4", work / "video-avatar", fps=fps))
    results["prepare_video_s"] = {"seconds_of_video": seconds, "wall_s": round(time.perf_counter() - start, 2)}
    results["renderers"].append(renderer_fps(video, "bank", audio, fps, frames))
    peak_mib, wall = render_in_fresh_process(video.path, audio_path, work / "video.mp4", "bank")
    results["video_avatar_render"] = {
        "avatar": f"{seconds:g} s {video.size[0]}x{video.size[1]} video",
        "renderer": "bank",
        "peak_rss_mib": peak_mib,
        "wall_s_with_process_start": round(wall, 2),
        "x_real_time_with_process_start": round(seconds / wall, 2),
    }
    return results


def write_results(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _write_wav(path: Path, audio: np.ndarray) -> None:
    from scipy.io import wavfile

    wavfile.write(path, SAMPLE_RATE, (np.clip(audio, -1, 1) * 32767).astype(np.int16))
