"""The neural runtime's fp16/bf16 torch runners on a CUDA GPU, checked against ONNX fp32.

Two steps, because the GPU machine has torch but not lipstream's media stack:

    python -m lipstream.bench.neural_runner prepare AVATAR_DIR WORK   # here: models + 8 real inputs
    python -m lipstream.bench.neural_runner run WORK OUT.json         # on the GPU machine

`run` loads each network's fp16 and bf16 variants with `runtime.load_model` (the renderer's own
path), compares their outputs with the fp32 ONNX outputs computed in `prepare` (PSNR), and times
the runner (host -> GPU copy, network, back to numpy; no compositing) at batch 32 and 1.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

INPUTS = 8
REPEATS = 20


def prepare(avatar_dir: str | Path, work: str | Path) -> Path:
    """Copy the package's models and manifest into work, with INPUTS real network inputs per
    network and the fp32 ONNX outputs for them (inputs.npz)."""
    from lipstream.avatar.package import load_package
    from lipstream.render.base import create_renderer

    avatar, work = load_package(avatar_dir), Path(work)
    (work / "pkg").mkdir(parents=True, exist_ok=True)
    shutil.copytree(avatar.path / "models", work / "pkg" / "models", dirs_exist_ok=True)
    shutil.copy(avatar.path / "manifest.json", work / "pkg" / "manifest.json")
    arrays = {}
    for arch in avatar.models["neural"]:
        renderer = create_renderer("neural", avatar, arch=arch, variant="fp32")
        xs = []
        for k in range(INPUTS):
            frame, _, i = renderer.idle.source(7 * k)
            params = np.array([0.1 * k, 0.5, 0.0, 0.3], np.float32)
            xs.append(renderer.conditioner.network_input(frame, i, params))
        x = np.stack(xs).astype(np.float32)
        arrays[f"{arch}_x"], arrays[f"{arch}_y32"] = x.astype(np.float16), renderer.model.run(x)
    np.savez_compressed(work / "inputs.npz", **arrays)
    return work


def run(work: str | Path, out: str | Path) -> dict:
    """fp16/bf16 against fp32 and runner throughput, written as JSON to out."""
    import torch

    from lipstream.neural.runtime import load_model

    work = Path(work)
    manifest = json.loads((work / "pkg" / "manifest.json").read_text())
    avatar = SimpleNamespace(path=work / "pkg", name=manifest.get("name", "check"),
                             models={k: v for k, v in manifest["models"].items() if k != "version"})
    data = np.load(work / "inputs.npz")
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for arch in avatar.models["neural"]:
        x, reference = data[f"{arch}_x"].astype(np.float32), data[f"{arch}_y32"]
        for variant in ("fp16", "bf16"):
            model = load_model(avatar, arch, variant)
            mse = float(np.mean((model.run(x) - reference) ** 2))
            results[f"{arch}/{variant}"] = {
                "psnr_vs_onnx_fp32_db": round(10 * np.log10(1.0 / max(mse, 1e-12)), 2),
                "runner_fps_batch32": round(_fps(model, np.repeat(x, 32 // INPUTS, axis=0)), 1),
                "runner_fps_batch1": round(_fps(model, x[:1]), 1),
                "gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            }
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results


def _fps(model, batch: np.ndarray) -> float:
    import torch

    for _ in range(3):
        model.run(batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(REPEATS):
        model.run(batch)
    torch.cuda.synchronize()
    return REPEATS * len(batch) / (time.perf_counter() - start)


if __name__ == "__main__":
    step, *args = sys.argv[1:]
    print(prepare(*args) if step == "prepare" else json.dumps(run(*args), indent=2))
