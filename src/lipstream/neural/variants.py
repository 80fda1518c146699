"""Precision variants of an exported network.

- `fp32`          the exported ONNX file (onnxruntime, any CPU);
- `int8-static`   weights and activations INT8 (QDQ, per-channel weights), activation ranges
                  calibrated on the avatar's own training frames (onnxruntime.quantization);
- `int8-dynamic`  INT8 weights, activations quantised per call (ConvInteger);
- `fp16`, `bf16`  the float32 weights run by torch in half precision on a CUDA GPU (no file
                  of their own: runtime.py casts `weights.npz`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ONNX_VARIANTS = ("fp32", "int8-static", "int8-dynamic")
TORCH_VARIANTS = ("fp16", "bf16")
CALIBRATION_FRAMES = 48


def quantize_static_int8(fp32: str | Path, out: str | Path, calibration: Iterable[np.ndarray]) -> Path:
    """Static INT8 (QDQ) of an fp32 ONNX file; calibration yields inputs (1, C, S, S) float32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, inputs):
            self.inputs = iter(inputs)

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {"input": np.asarray(x, np.float32)}

    _quiet()
    quantize_static(str(fp32), str(out), Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return Path(out)


def quantize_dynamic_int8(fp32: str | Path, out: str | Path) -> Path:
    """Dynamic INT8 (weights INT8, activations quantised at run time) of an fp32 ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QUInt8)
    return Path(out)


def _quiet() -> None:
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser logs shape-inference hints as warnings
