"""Trained networks in the avatar package: files under models/neural-ARCH/ and the manifest's
`models` section (validated on load by lipstream.avatar.package):

    "models": {
      "version": 1,
      "neural": {
        "lite": {
          "arch": {"name": "lite", "size": 128, "widths": [...]},
          "geometry": {...geometry.CropGeometry.to_dict()},
          "reference": 47,                  # the reference frame (index into frames.npy)
          "references": {"frames": [...], "params": [[...]]},   # warp head: the training frames it
                                            # may move and their mouth parameters (references.py)
          "trained": {...},                 # held-out PSNR, copy-reference PSNR, steps, seconds, device
          "files": {"weights": {"path": "models/neural-lite/weights.npz", "bytes": 1059000, "sha256": "..."},
                    "fp32": {...}, "int8-static": {...}, "int8-dynamic": {...}}
        },
        "full": {...}
      }
    }

Files are written into a temporary folder and moved into place, then the manifest is
rewritten, so a failure leaves the package as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from lipstream.avatar.package import MODELS_VERSION, file_sha256, read_manifest, write_manifest

TRAINED_KEYS = ("heldout_psnr_db", "copy_reference_psnr_db", "steps", "train_seconds", "device", "parameters",
                "frames", "heldout_start", "torch", "imported_from")


def install(package_path: str | Path, weights: dict, arch: dict, dataset_meta: dict, trained: dict,
            calibration: list[np.ndarray] | None = None, variants=("fp32", "int8-static", "int8-dynamic"),
            references: dict | None = None) -> dict:
    """Export, quantise and store one trained network in the package; returns its manifest entry.

    weights: numpy state (model.state_to_numpy); arch: model.NetConfig dict; dataset_meta: the
    dataset's meta (geometry, reference); calibration: inputs (1, C, S, S) float32 for static INT8;
    references: the warp head's candidate frames (reference_candidates).
    """
    from lipstream.neural.export import export_onnx
    from lipstream.neural.variants import quantize_dynamic_int8, quantize_static_int8

    package_path = Path(package_path)
    manifest = read_manifest(package_path)
    folder = f"models/neural-{arch['name']}"
    work = Path(tempfile.mkdtemp(prefix=".neural-", dir=package_path))
    work.chmod(0o755)  # mkdtemp makes it private; the package's other folders are not
    try:
        weights = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in weights.items()}
        np.savez(work / "weights.npz", **weights)
        files = {"weights": "weights.npz"}
        if "fp32" in variants or any(v.startswith("int8") for v in variants):
            export_onnx(weights, arch, work / "fp32.onnx")
            files["fp32"] = "fp32.onnx"
        if "int8-static" in variants:
            if not calibration:
                raise ValueError("static INT8 needs calibration inputs")
            quantize_static_int8(work / "fp32.onnx", work / "int8-static.onnx", calibration)
            files["int8-static"] = "int8-static.onnx"
        if "int8-dynamic" in variants:
            quantize_dynamic_int8(work / "fp32.onnx", work / "int8-dynamic.onnx")
            files["int8-dynamic"] = "int8-dynamic.onnx"
        for leftover in work.iterdir():
            if leftover.name not in files.values():
                leftover.unlink()
        entry = {
            "arch": arch,
            "geometry": dataset_meta["geometry"],
            "reference": int(dataset_meta["reference"]),
            **({"references": references} if references else {}),
            "trained": {k: trained[k] for k in TRAINED_KEYS if k in trained},
            "files": {name: {"path": f"{folder}/{file}", "bytes": (work / file).stat().st_size,
                             "sha256": file_sha256(work / file)} for name, file in files.items()},
        }
        target = package_path / folder
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(exist_ok=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    models = manifest.get("models") or {"version": MODELS_VERSION, "neural": {}}
    models["version"] = MODELS_VERSION
    models.setdefault("neural", {})[arch["name"]] = entry
    manifest["models"] = models
    write_manifest(package_path, manifest)
    return entry


def reference_candidates(params: np.ndarray, split: int) -> dict:
    """The warp head's candidate reference frames: every training frame (0..split-1) and its
    mouth parameters (params (N, 4), the dataset's), for the manifest."""
    return {"frames": list(range(split)), "params": np.round(np.asarray(params[:split], np.float64), 4).tolist()}


def calibration_inputs(package, conditioner, count: int = 48) -> list[np.ndarray]:
    """Network inputs (1, C, S, S) of `count` training frames (evenly spread over the first
    four fifths, each with its own fitted mouth), for static INT8 calibration."""
    from lipstream.neural.dataset import heldout_start

    split = heldout_start(package.frame_count)
    picks = np.unique(np.linspace(0, split - 1, min(count, split)).round().astype(int))
    return [conditioner.network_input(np.asarray(package.frames[i]), int(i), conditioner.fitted_params(int(i)))[None]
            for i in picks]
