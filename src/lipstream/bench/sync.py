"""Sync evaluator benchmark: shift tracking and absolute offsets on real clips, and speed.

- Shift tracking: each clip's own audio moved by known shifts (default -400..+400 ms in 40 ms
  steps, + = audio earlier); a trial passes when the measured offset changes by the shift
  within 40 ms. Shifts are applied to the decoded audio in memory and measured with the same
  code as a file (`evaluate_clip` on the clip with its audio replaced); a few are re-checked
  on real shifted files written with `write_realigned`.
- Absolute: the unshifted clips, assumed in sync as recorded, should measure |offset| <= 80 ms.
- Speed: wall time of `evaluate_video_sync` on a 60 s, 25 fps, 512x512 video made by looping a
  clip (written outside the repository).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from lipstream.audio import SAMPLE_RATE, load_audio
from lipstream.bench.machine import machine_info
from lipstream.errors import NotSupportedError
from lipstream.evaluate import evaluate_clip, evaluate_video_sync, read_clip, write_realigned
from lipstream.evaluate.metrics import SIGN_CONVENTION
from lipstream.evaluate.video import on_video_timeline

SHIFTS_MS = tuple(range(-400, 401, 40))
TRACK_TOLERANCE_MS = 40.0
ABSOLUTE_BAR_MS = 80.0
TRACKING_BAR = 0.95
SPEED_BAR_S = 30.0
SPEED_VIDEO_S = 60.0
# Real shifted files checked against the in-memory shift: (clip index, shift ms).
FILE_CHECKS = ((0, -200), (4, 120), (7, 280))


def run_sync_bench(
    media_dir: Path,
    shifts_ms: Sequence[float] = SHIFTS_MS,
    speed_source: str | None = "OpenTalker_SadTalker_WDA_AlexandriaOcasioCortez_000.mp4",
    work_dir: Path | None = None,
) -> dict:
    """Run the three bars on every *.mp4 in media_dir; JSON-ready results with the machine.

    speed_source: the clip looped into the 60 s speed video (None skips the speed bar).
    work_dir: where shifted files and the speed video go (a temporary folder by default).
    """
    paths = sorted(Path(media_dir).glob("*.mp4"))
    if not paths:
        raise NotSupportedError(f"no *.mp4 clips in {media_dir}")
    with tempfile.TemporaryDirectory(prefix="lipstream-sync-bench-") as tmp:
        work = Path(work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        clips = [_measure_clip(path, shifts_ms) for path in paths]
        file_checks = [_file_check(paths[i], clips[i], shift, work) for i, shift in FILE_CHECKS if i < len(paths)]
        speed = _speed(Path(media_dir) / speed_source, work) if speed_source else None
    trials = [t for c in clips for t in c["trials"]]
    tracked = sum(abs(t["error_ms"]) <= TRACK_TOLERANCE_MS for t in trials)
    errors = np.abs([t["error_ms"] for t in trials])
    return {
        "benchmark": "sync-evaluator",
        "media_dir": str(media_dir),
        "sign_convention": SIGN_CONVENTION,
        "shift_convention": "shift_ms > 0: the audio was moved earlier; the offset should change by +shift_ms",
        "shifts_ms": list(shifts_ms),
        "summary": {
            "tracking_rate": round(tracked / len(trials), 4),
            "tracking_trials": len(trials),
            "tracking_error_median_ms": round(float(np.median(errors)), 1),
            "tracking_error_p95_ms": round(float(np.percentile(errors, 95)), 1),
            "tracking_bar": TRACKING_BAR,
            "tracking_pass": tracked / len(trials) >= TRACKING_BAR,
            "absolute_max_ms": round(max(abs(c["offset_ms"]) for c in clips), 1),
            "absolute_clips_within_bar": sum(c["absolute_pass"] for c in clips),
            "absolute_bar_ms": ABSOLUTE_BAR_MS,
            "absolute_pass": all(c["absolute_pass"] for c in clips),
            "speed_s": None if speed is None else speed["seconds"],
            "speed_bar_s": SPEED_BAR_S,
            "speed_pass": None if speed is None else speed["seconds"] <= SPEED_BAR_S,
        },
        "clips": clips,
        "file_checks": file_checks,
        "speed": speed,
        "machine": machine_info(),
    }


def write_results(result: dict, path: Path) -> None:
    """Write the results JSON (2-space indent) to path, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def shift_audio(audio: np.ndarray, shift_ms: float) -> np.ndarray:
    """float32 16 kHz audio moved by shift_ms (+ = earlier), same length, silence filled in."""
    n = int(round(shift_ms * SAMPLE_RATE / 1000))
    out = np.zeros_like(audio)
    if n >= 0:
        out[: len(audio) - n] = audio[n:]
    else:
        out[-n:] = audio[: len(audio) + n]
    return out


def _measure_clip(path: Path, shifts_ms: Sequence[float]) -> dict:
    start = time.perf_counter()
    clip = read_clip(path)
    read_s = time.perf_counter() - start
    base = evaluate_clip(clip)
    trials = []
    for shift in shifts_ms:
        moved = evaluate_clip(dataclasses.replace(clip, audio=shift_audio(clip.audio, shift)))
        trials.append({
            "shift_ms": shift,
            "offset_ms": round(moved.offset_ms, 1),
            "error_ms": round(moved.offset_ms - base.offset_ms - shift, 1),
            "confidence": round(moved.confidence, 3),
        })
    return {
        "clip": path.name,
        "duration_s": round(clip.info.duration_s, 2),
        "offset_ms": round(base.offset_ms, 1),
        "confidence": round(base.confidence, 3),
        "average_offset_ms": round(base.average_offset_ms, 1),
        "grade": base.grade,
        "absolute_pass": abs(base.offset_ms) <= ABSOLUTE_BAR_MS,
        "tracked": sum(abs(t["error_ms"]) <= TRACK_TOLERANCE_MS for t in trials),
        "trials": trials,
        "read_s": round(read_s, 2),
    }


def _file_check(path: Path, measured: dict, shift_ms: float, work: Path) -> dict:
    """Measure a real file whose audio was moved by shift_ms, against the in-memory trial."""
    shifted = write_realigned(path, work / f"{path.stem}_shift{shift_ms:+.0f}.mp4", offset_ms=-shift_ms)
    from_file = evaluate_video_sync(shifted).offset_ms
    in_memory = next(t["offset_ms"] for t in measured["trials"] if t["shift_ms"] == shift_ms)
    return {
        "clip": path.name,
        "shift_ms": shift_ms,
        "offset_from_file_ms": round(from_file, 1),
        "offset_in_memory_ms": in_memory,
        "error_vs_unshifted_ms": round(from_file - measured["offset_ms"] - shift_ms, 1),
    }


def _speed(source: Path, work: Path) -> dict:
    video = _looped_video(source, work / f"{source.stem}_{SPEED_VIDEO_S:.0f}s.mp4", SPEED_VIDEO_S)
    start = time.perf_counter()
    metrics = evaluate_video_sync(video)
    seconds = time.perf_counter() - start
    return {
        "video": f"{source.name} looped to {SPEED_VIDEO_S:.0f} s (H.264, {metrics.fps:.0f} fps)",
        "duration_s": round(metrics.duration_s, 2),
        "seconds": round(seconds, 2),
        "offset_ms": round(metrics.offset_ms, 1),
    }


def _looped_video(source: Path, out: Path, seconds: float) -> Path:
    """`source` (picture and sound) repeated to `seconds`, encoded as H.264 + AAC at its frame rate."""
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
    period = on_video_timeline(load_audio(source), 0.0, len(frames) / rate)  # one loop, exactly
    audio = np.tile(period, int(np.ceil(seconds * SAMPLE_RATE / len(period))))[: int(seconds * SAMPLE_RATE)]
    n_frames = int(round(seconds * rate))
    with av.open(str(out), "w") as dst:
        video = dst.add_stream("libx264", rate=rate)
        video.width, video.height = frames[0].shape[1], frames[0].shape[0]
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20"}
        sound = dst.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frames[k % len(frames)], format="rgb24")
            frame.pts = k
            dst.mux(video.encode(frame))
        dst.mux(video.encode(None))
        for start in range(0, len(audio), 1024):
            chunk = np.pad(audio[start : start + 1024], (0, max(0, start + 1024 - len(audio))))
            frame = av.AudioFrame.from_ndarray(chunk[None].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            dst.mux(sound.encode(frame))
        dst.mux(sound.encode(None))
    return out
