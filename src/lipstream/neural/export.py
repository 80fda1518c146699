"""ONNX export of a trained network (torch; BatchNorm folded into the convolutions).

The graph takes `input` (B, IN_CHANNELS, S, S) float32 and gives `output` (B, 3, S, S) float32
(rgb head) or the warp head's parts (B, PARTS_CHANNELS, S, S) (model.UNet.parts), B dynamic. Exported with the TorchScript exporter (dynamo=False, opset 17), which needs no
onnxscript and writes one self-contained file that onnxruntime's quantisation tools accept.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lipstream.neural.layout import IN_CHANNELS

OPSET = 17


def export_onnx(weights: dict, arch: dict, path: str | Path) -> Path:
    """Write the network (model.NetConfig dict `arch`, numpy `weights`) to an ONNX file."""
    import torch

    from lipstream.neural.model import NetConfig, PartsView, build_model, load_numpy_state

    config = NetConfig.from_dict(arch)
    model = PartsView(load_numpy_state(build_model(config), weights).eval())
    path = Path(path)
    example = torch.rand(1, IN_CHANNELS, config.size, config.size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    return path


def torch_output(weights: dict, arch: dict, x: np.ndarray) -> np.ndarray:
    """The PyTorch network's float32 output (what the ONNX file gives) for input x
    (B, IN_CHANNELS, S, S) on the CPU."""
    import torch

    from lipstream.neural.model import NetConfig, build_model, load_numpy_state

    model = load_numpy_state(build_model(NetConfig.from_dict(arch)), weights).eval()
    with torch.no_grad():
        return model.parts(torch.from_numpy(np.asarray(x, np.float32))).numpy()
