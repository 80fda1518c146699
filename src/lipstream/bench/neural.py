"""`lipstream bench neural`: the neural renderer's held-out quality against `bank`, its
temporal stability, and its speed on this CPU, per variant, on avatars trained with
`lipstream train` (the GPU half, training and fp16/bf16 figures: lipstream.bench.neural_gpu).

Quality, per avatar: the held-out frames (the last fifth, never trained on) are rendered on
themselves as base frames, the mouth given by their TRUE lip landmarks (the lip model fitted to
them, as in training); `bank` renders the same frames from a bank built on the training frames
only, asked for the same frames' measured mouth parameters. Both are compared with the real
frames over the neural network's hidden region mapped into the frame (the mouth and jaw: the
pixels either may change), by lipstream.bench.neural_quality: PSNR, SSIM, the sharpness ratio
(variance of the Laplacian, render / real), the high-frequency energy ratio, the gradient-
magnitude similarity, and the frame-to-frame change against the real video's own.
Sheets: per avatar a PNG of real | bank | neural crops of the same held-out frames.
Speed: render_frame (crop, sketch, network, warp back and blend; the base frame's lip model
cached) on frames driven by the default driver, p50/p95 ms and fps, single frame at a time.
Offline (`--offline-audio WAV`): `lipstream render --renderer neural` of that audio on the first
avatar with its default variant, in a fresh process: a multiple of real time, command start,
driving, batched network, compositing and encoding included.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from lipstream.bench.machine import machine_info

from lipstream.bench.neural_quality import mean_change, opening_quality, opening_region, region_quality

SHEET_FRAMES = 6
SHEET_TILE = 224  # pixels, the longer side of a tile
# (arch, variant, mouth) measured on the held-out frames: the GPU default (full; fp32 here, fp16
# on a GPU is within 0.01 dB) and the CPU default (lite, static INT8), each with the default
# mouth (textured) and the drawn one it replaced.
QUALITY_VARIANTS = [("full", "fp32", "textured"), ("lite", "int8-static", "textured"),
                    ("full", "fp32", "drawn"), ("lite", "int8-static", "drawn")]
SPEED_VARIANTS = [("lite", "int8-static"), ("lite", "fp32"), ("full", "int8-static"), ("full", "fp32")]


def heldout_quality(avatar, variants: list[tuple[str, str]], sheet: Path | None = None) -> dict:
    """Held-out PSNR/SSIM/temporal change of bank and the neural variants (module docstring)."""
    from lipstream.avatar.bank import build_bank
    from lipstream.face.mouth import INNER_LOWER, INNER_UPPER, measure_mouth
    from lipstream.motion.params import params_from_measures
    from lipstream.neural.dataset import heldout_start
    from lipstream.neural.geometry import hidden_region_pixels
    from lipstream.render.bank import BankRenderer
    from lipstream.render.neural import NeuralRenderer

    n = avatar.frame_count
    split = heldout_start(n)
    frames = [np.asarray(avatar.frames[j]) for j in range(split, n)]
    landmarks = np.asarray(avatar.landmarks, np.float32)
    measures = measure_mouth(landmarks)
    measured = params_from_measures(measures.aperture, measures.width / np.median(measures.width))
    banked = dataclasses.replace(avatar, bank=build_bank(avatar.frames, landmarks, entries=np.arange(split)))
    bank = BankRenderer(banked, still=True)
    outputs = {"real": frames, "bank": [bank.render_frame(j, measured[j]) for j in range(split, n)]}
    region = None
    for arch, variant, *mouth in variants:
        r = NeuralRenderer(avatar, arch=arch, variant=variant, still=True, mouth=(mouth or ["drawn"])[0])
        c = r.conditioner
        if region is None:  # the region of the first (largest) network's crop, the same for all
            region = [hidden_region_pixels(c.geometry, c.transforms[j], c.size, frames[0].shape)
                      for j in range(split, n)]
        name = f"neural {arch}/{variant}" + (f" {mouth[0]} mouth" if mouth else "")
        outputs[name] = [r.render_frame(j, c.fitted_params(j)) for j in range(split, n)]
    inner = list(INNER_UPPER) + list(INNER_LOWER[-2:0:-1])  # around the opening
    openings = [opening_region(landmarks[j, inner], frames[0].shape) for j in range(split, n)]
    result = {"avatar": avatar.name, "frames": n, "heldout_frames": n - split, "size": list(avatar.size)}
    for name, outs in outputs.items():
        if name != "real":
            result[name] = {**region_quality(outs, frames, region), "opening": opening_quality(outs, frames, openings)}
    result["real_change_per_frame"] = round(mean_change(frames, region), 2)
    if sheet is not None:
        _contact_sheet(outputs, region, sheet)
        result["sheet"] = str(sheet)
    return result


def _contact_sheet(outputs: dict, region: list[np.ndarray], path: Path) -> None:
    """Rows: real, bank, each neural variant; columns: SHEET_FRAMES held-out frames, cropped
    to the region's box with a margin, labelled."""
    union = np.any(region, axis=0)
    ys, xs = np.nonzero(union)
    pad = 10
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad, union.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad, union.shape[1])
    count = len(outputs["real"])
    picks = np.linspace(0, count - 1, min(SHEET_FRAMES, count)).round().astype(int)
    scale = SHEET_TILE / max(y1 - y0, x1 - x0)
    rows = []
    for name, outs in outputs.items():
        tiles = [cv2.resize(np.ascontiguousarray(outs[p][y0:y1, x0:x1]), None, fx=scale, fy=scale,
                            interpolation=cv2.INTER_AREA) for p in picks]
        row = np.concatenate(tiles, axis=1)
        label = np.full((18, row.shape[1], 3), 255, np.uint8)
        cv2.putText(label, name, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, row]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def render_speed(avatar, arch: str, variant: str, frames: int = 100, threads: int | None = None) -> dict:
    """render_frame speed (ms p50/p95, fps) driven by the default driver, compositing included."""
    from lipstream.audio.io import load_audio
    from lipstream.avatar.resolve import bundled_asset
    from lipstream.motion.drivers import DEFAULT_DRIVER, get_driver
    from lipstream.render.neural import NeuralRenderer

    track = get_driver(DEFAULT_DRIVER, avatar.fps).drive(load_audio(bundled_asset("speech.wav")))
    values = np.resize(track.values, (frames, track.values.shape[1]))
    r = NeuralRenderer(avatar, arch=arch, variant=variant, threads=threads, still=True)
    for i in range(min(avatar.frame_count, frames)):  # the lip models of the frames used, built once
        r.conditioner.lip_model(r.idle.source_index(i))
    r.render_frame(0, values[0])
    times, net = [], []
    run = r.model.run

    def timed_run(x: np.ndarray) -> np.ndarray:  # the network's share of each render_frame
        start = time.perf_counter()
        out = run(x)
        net.append(time.perf_counter() - start)
        return out

    r.model.run = timed_run
    for k, row in enumerate(values):
        start = time.perf_counter()
        r.render_frame(k, row)
        times.append(time.perf_counter() - start)
    p50 = float(np.median(times))
    return {"arch": arch, "variant": variant, "frames": frames, "threads": threads or "all",
            "ms_p50": round(1e3 * p50, 2), "ms_p95": round(1e3 * float(np.percentile(times, 95)), 2),
            "network_ms_p50": round(1e3 * float(np.median(net)), 2), "fps": round(1 / p50, 1),
            "frame_size": list(avatar.size)}


def offline_speed(avatar, audio: Path) -> dict:
    """`lipstream render --renderer neural` of `audio` on `avatar` (its default variant) in a
    fresh process: wall seconds with the command's start, multiple of real time, peak memory,
    and the 1-minute load average before and after (the machine may be shared)."""
    from lipstream.audio.io import read_audio
    from lipstream.bench.render import render_in_fresh_process
    from lipstream.neural.runtime import default_choice

    samples, rate = read_audio(audio)
    seconds = len(samples) / rate
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lipstream-bench-") as work:
        peak_mib, wall = render_in_fresh_process(Path(avatar.path), Path(audio), Path(work) / "neural.mp4", "neural")
    return {"avatar": avatar.name, "frame_size": list(avatar.size), "variant": "/".join(default_choice(avatar)),
            "audio_s": round(seconds, 2), "wall_s_with_process_start": round(wall, 2),
            "x_real_time_with_process_start": round(seconds / wall, 2), "peak_rss_mib": peak_mib,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def file_sizes(avatar) -> dict:
    return {f"{arch}/{variant}": info["bytes"] for arch, entry in avatar.models.get("neural", {}).items()
            for variant, info in entry["files"].items()}


def run_neural_bench(avatars: list[Path], sheets: Path | None = None, speed_frames: int = 100,
                     quality_variants=QUALITY_VARIANTS, speed_variants=SPEED_VARIANTS,
                     offline_audio: Path | None = None) -> dict:
    """Held-out quality and a sheet per avatar (none if `quality_variants` is empty); render
    speed of `speed_variants` (those the package has) on the first, and its offline render of
    `offline_audio` if given."""
    from lipstream.avatar.package import load_package

    results: dict = {"machine": machine_info(), "quality": [], "speed": [], "file_bytes": {}}
    for path in avatars if quality_variants else []:
        avatar = load_package(path)
        sheet = sheets / f"neural-{avatar.name}.png" if sheets else None
        results["quality"].append(heldout_quality(avatar, list(quality_variants), sheet))
        print(json.dumps(results["quality"][-1]), flush=True)
    avatar = load_package(avatars[0])
    results["file_bytes"] = file_sizes(avatar)
    for arch, variant in speed_variants:
        if arch not in avatar.models.get("neural", {}):  # e.g. a package trained with --arch lite
            continue
        results["speed"].append({"avatar": avatar.name, **render_speed(avatar, arch, variant, speed_frames)})
        print(json.dumps(results["speed"][-1]), flush=True)
    if offline_audio is not None:
        results["offline"] = [offline_speed(avatar, offline_audio)]
        print(json.dumps(results["offline"][-1]), flush=True)
    return results


def write_results(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Held-out quality vs bank and CPU speed of trained avatars.")
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results/neural-cpu.json"))
    parser.add_argument("--sheets", type=Path, default=Path("out/neural-sheets"),
                        help="write a sheet (real | bank | neural) per avatar here")
    parser.add_argument("--speed-frames", type=int, default=100, help="frames timed per variant (0: no speed)")
    parser.add_argument("--speed-only", action="store_true", help="only the speed (a timing run), no quality")
    parser.add_argument("--offline-audio", type=Path, help="also time `lipstream render` of this audio on the first")
    args = parser.parse_args(argv)
    write_results(run_neural_bench(args.avatars, args.sheets, args.speed_frames,
                                   [] if args.speed_only else QUALITY_VARIANTS,
                                   SPEED_VARIANTS if args.speed_frames else [], args.offline_audio), args.out)


if __name__ == "__main__":
    main()
