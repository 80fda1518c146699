"""Loading a trained network's variant from an avatar package and running it.

ONNX variants (fp32, int8-static, int8-dynamic) run on onnxruntime's CPU provider and need no
torch; fp16 and bf16 run the float32 weights in half precision with torch on a CUDA GPU. Each
file's sha256 is checked against the manifest before it is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipstream.errors import BadAvatarError, NotSupportedError
from lipstream.neural.variants import ONNX_VARIANTS, TORCH_VARIANTS

VARIANTS = ONNX_VARIANTS + TORCH_VARIANTS


def no_model_message(avatar) -> str:
    if avatar.kind != "video":
        return (f"avatar {avatar.name} is a photo: the neural renderer is trained on a person's video "
                "(lipstream prepare VIDEO -o DIR, then lipstream train DIR); for a photo use --renderer warp")
    return f"avatar {avatar.name} has no trained neural model; run `lipstream train {avatar.path}` first"


def model_entry(avatar, arch: str) -> dict:
    """The manifest entry of the avatar's `arch` network; NotSupportedError if there is none."""
    entries = avatar.models.get("neural", {})
    if not entries:
        raise NotSupportedError(no_model_message(avatar))
    if arch not in entries:
        raise NotSupportedError(f"avatar {avatar.name} has no trained {arch!r} network (it has: "
                                f"{', '.join(sorted(entries))}); run `lipstream train {avatar.path} --arch {arch}`")
    return entries[arch]


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU. torch is not imported on a machine with
    no NVIDIA driver (it takes a second and a few hundred MB), nor needed anywhere else here."""
    if not Path("/proc/driver/nvidia").exists():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def default_choice(avatar) -> tuple[str, str]:
    """(arch, variant) the renderer uses by default: on a CUDA GPU the full network in fp16 (the
    lite one if the package has only that), else the lite network's static INT8 (real time on a
    CPU), else whatever the package has."""
    entries = avatar.models.get("neural", {})
    if not entries:
        raise NotSupportedError(no_model_message(avatar))
    on_gpu = [arch for arch in ("full", "lite") if "weights" in entries.get(arch, {}).get("files", {})]
    if on_gpu and cuda_available():
        return on_gpu[0], "fp16"
    for arch in ["lite", "full"] + sorted(set(entries) - {"lite", "full"}):
        for variant in ("int8-static", "fp32", "int8-dynamic"):
            if variant in entries.get(arch, {}).get("files", {}):
                return arch, variant
    raise NotSupportedError(f"avatar {avatar.name}'s neural models have no ONNX file to run on this machine; "
                            f"run `lipstream train {avatar.path}` again")


@dataclass
class NeuralModel:
    """A loaded variant: `run(x)` maps (B, C, S, S) float32 inputs to (B, 3, S, S) float32 outputs
    (rgb head) or (B, PARTS_CHANNELS, S, S) parts (warp head, model.UNet.parts)."""

    arch: str
    variant: str
    entry: dict
    runner: object

    @property
    def size(self) -> int:
        return int(self.entry["arch"]["size"])

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.runner(np.ascontiguousarray(x, np.float32))


def load_model(avatar, arch: str, variant: str, threads: int | None = None) -> NeuralModel:
    """Load variant `variant` of the avatar's `arch` network (see module docstring)."""
    if variant not in VARIANTS:
        raise NotSupportedError(f"unknown neural variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    entry = model_entry(avatar, arch)
    source = "weights" if variant in TORCH_VARIANTS else variant
    files = entry["files"]
    if source not in files:
        raise NotSupportedError(f"avatar {avatar.name}'s {arch} network has no {variant} variant (it has: "
                                f"{', '.join(sorted(files))}); run `lipstream train {avatar.path}` again")
    path = _checked(avatar, arch, source, files[source])
    if variant in TORCH_VARIANTS:
        return NeuralModel(arch, variant, entry, _torch_runner(path, entry["arch"], variant))
    return NeuralModel(arch, variant, entry, _onnx_runner(avatar, arch, path, threads))


def _checked(avatar, arch: str, variant: str, info: dict) -> Path:
    from lipstream.avatar.package import file_sha256

    path = Path(avatar.path) / info["path"]
    retrain = f"run `lipstream train {avatar.path}` again"
    if not path.is_file():
        raise BadAvatarError(f"avatar {avatar.name}: the neural {arch} model's {variant} file {info['path']} is "
                             f"missing; {retrain}")
    if file_sha256(path) != info.get("sha256"):
        raise BadAvatarError(f"avatar {avatar.name}: the neural {arch} model's {variant} file {info['path']} is "
                             f"corrupt (checksum mismatch); {retrain}")
    return path


def _onnx_runner(avatar, arch: str, path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads sleep between runs instead of spinning: the CPU they would burn goes to the
    # compositing and encoding beside them (render.neural overlaps them on two cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise BadAvatarError(f"avatar {avatar.name}: the neural {arch} model {path.name} can't be loaded ({exc}); "
                             f"run `lipstream train {avatar.path}` again") from None

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(["output"], {"input": x})[0]

    return run


def _torch_runner(path: Path, arch: dict, variant: str):
    if not cuda_available():
        raise NotSupportedError(f"the {variant} variant runs on a CUDA GPU with torch; this machine has none "
                                "(use fp32 or int8-static)")
    import torch

    from lipstream.neural.model import NetConfig, PartsView, build_model, load_numpy_state

    dtype = torch.float16 if variant == "fp16" else torch.bfloat16
    weights = dict(np.load(path, allow_pickle=False))
    model = PartsView(load_numpy_state(build_model(NetConfig.from_dict(arch)), weights)).eval().cuda()
    model = model.to(memory_format=torch.channels_last).to(dtype)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x).cuda().to(dtype).contiguous(memory_format=torch.channels_last)
            return model(t).float().cpu().numpy()

    return run
