"""`lipstream train`: an avatar package in, its trained networks and their variants stored in it.

Steps: build the dataset (dataset.py) from the package; train each architecture (train.py) on
this machine, or take weights trained elsewhere from the same dataset (`weights=`: a
weights.npz, or a file packed by lipstream.bench.neural_gpu holding ARCH/NAME/... keys); then
export, quantise with the avatar's own frames for calibration, and store (store.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipstream.errors import BadAvatarError, NotSupportedError

ARCHS = ("full", "lite")
# Steps per network when not given: what the measured figures (docs/neural.md) were trained with.
DEFAULT_STEPS = {"full": 1400, "lite": 3000, "tiny": 150}
WORK_DIR = ".train"  # checkpoints inside the package while training; removed when done


def check_trainable(avatar) -> None:
    if avatar.kind != "video":
        raise BadAvatarError(f"avatar {avatar.name} is a photo; the neural renderer learns from the person's own "
                             "video: prepare a video of them talking (10 s or more) and train that")


def weights_for(files, arch: str, name: str) -> dict | None:
    """The weights of `arch` for avatar `name` in weights files (a path or a list of paths),
    or None if none holds them."""
    for file in [files] if isinstance(files, (str, Path)) else files:
        found = _weights_in(file, arch, name)
        if found is not None:
            return found
    return None


def _weights_in(file: str | Path, arch: str, name: str) -> dict | None:
    with np.load(file, allow_pickle=False) as data:
        keys = list(data.keys())
        for prefix in (f"{arch}/{name}/", f"{arch}/"):
            picked = [k for k in keys if k.startswith(prefix) and k.count("/") == prefix.count("/")]
            if picked:
                return {k[len(prefix):]: data[k] for k in picked}
        if keys and all("/" not in k for k in keys):
            return {k: data[k] for k in keys}
    return None


def train_avatar(
    avatar,
    archs=ARCHS,
    steps: dict | None = None,
    batch: int = 32,
    device: str = "auto",
    weights=None,
    work_dir: str | Path | None = None,
    dataset_progress: tuple | None = None,
    train_progress: Callable[[str], tuple] | None = None,
) -> dict:
    """Train (or import) `archs` for a video AvatarPackage and store them; returns {arch: entry}.

    dataset_progress: (context manager, callback(done, total)) shows building the dataset;
    train_progress(arch) -> (context manager, callback(step, total, info)) shows each training.
    """
    from lipstream.neural.conditioning import Conditioner
    from lipstream.neural.dataset import build_dataset, read_meta
    from lipstream.neural.geometry import CropGeometry
    from lipstream.neural.store import calibration_inputs, install, reference_candidates

    check_trainable(avatar)
    if weights is None and importlib.util.find_spec("torch") is None:
        raise NotSupportedError("training needs torch (pip install torch), or weights trained elsewhere: build the "
                                "dataset with --dataset-only, train it with python -m lipstream.neural.train, "
                                "then pass --weights")
    if importlib.util.find_spec("onnx") is None:
        raise NotSupportedError("storing a trained network needs onnx for the export (pip install onnx)")
    from lipstream.neural.model import CONFIGS

    sizes = sorted({CONFIGS[a].size for a in archs}, reverse=True)
    context, callback = dataset_progress or (contextlib.nullcontext(), None)
    with context:
        arrays = build_dataset(avatar, sizes=sizes, progress=callback)
    work_dir = Path(work_dir) if work_dir else Path(avatar.path) / WORK_DIR
    meta = read_meta(arrays)
    entries = {}
    for arch in archs:
        net = CONFIGS[arch]
        if weights is not None:
            state = weights_for(weights, arch, Path(avatar.path).name)
            if state is None:
                raise BadAvatarError(f"the weights files hold no {arch} weights for avatar {Path(avatar.path).name}")
            trained = {"imported_from": "weights trained elsewhere", **_summary_beside(weights, arch, Path(avatar.path).name)}
        else:
            from lipstream.neural.model import state_to_numpy
            from lipstream.neural.train import CHECKPOINT, TrainConfig, Trainer

            config_steps = (steps or {}).get(arch) or DEFAULT_STEPS[arch]
            config = TrainConfig(arch=arch, steps=config_steps, batch=batch, device=device,
                                 eval_every=max(config_steps // 4, 1))
            try:
                trainer = Trainer(arrays, config, work_dir / arch)
            except ValueError:  # a checkpoint of another configuration: start afresh
                (work_dir / arch / CHECKPOINT).unlink()
                trainer = Trainer(arrays, config, work_dir / arch)
            context, callback = train_progress(arch) if train_progress else (contextlib.nullcontext(), None)
            with context:
                trained = trainer.train(callback)
            state = state_to_numpy(trainer.model)
        references = reference_candidates(arrays["params"], meta["heldout_start"]) if net.head == "warp" else None
        conditioner = Conditioner(avatar, CropGeometry.from_dict(meta["geometry"]), net.size, meta["reference"],
                                  references)
        entries[arch] = install(avatar.path, state, net.to_dict(), meta, trained,
                                calibration_inputs(avatar, conditioner), references=references)
    shutil.rmtree(work_dir, ignore_errors=True)
    return entries


def _summary_beside(files, arch: str, name: str) -> dict:
    """The training summary of (arch, name) in a gpu.json beside the weights files, if there is one."""
    import json

    for file in [files] if isinstance(files, (str, Path)) else files:
        report = Path(file).parent / "gpu.json"
        if report.is_file():
            for summary in json.loads(report.read_text()).get("trainings", []):
                if summary.get("dataset") == name and summary.get("arch", {}).get("name") == arch:
                    return summary
    return {}
