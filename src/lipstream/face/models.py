"""The bundled TFLite face models (from MediaPipe 0.10.21, Apache-2.0; see NOTICE), run on ai-edge-litert.

The models ship inside the package (lipstream/assets/models/), so nothing is fetched at run time.
TFLite's C++ code prints lines such as "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
straight to file descriptor 2 when an interpreter starts; they are hidden unless
LIPSTREAM_LOG=debug.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from lipstream.errors import NotSupportedError

DETECTOR_MODEL = "face_detection_short_range.tflite"
MESH_MODEL = "face_landmark_with_attention.tflite"
LITERT_MISSING = "ai-edge-litert is needed for face landmarks: pip install ai-edge-litert"


def model_path(name: str) -> Path:
    """Path of a model file shipped in lipstream/assets/models/."""
    return Path(str(resources.files("lipstream") / "assets" / "models" / name))


class TfliteModel:
    """A TFLite model (a bundled file's name, or a model's bytes) on one CPU thread; `run` takes
    and returns float32 arrays by tensor name."""

    def __init__(self, model: str | bytes, num_threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise NotSupportedError(LITERT_MISSING) from exc
        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model_path(model))}
        with native_stderr_silenced():
            self._interpreter = Interpreter(**source, num_threads=num_threads)
            self._interpreter.allocate_tensors()
            self.inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
            self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
            # XNNPACK logs when it first runs.
            self.run({name: np.zeros(d["shape"], np.float32) for name, d in self.inputs.items()})

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, value in inputs.items():
            self._interpreter.set_tensor(self.inputs[name]["index"], np.ascontiguousarray(value, np.float32))
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index).copy() for name, index in self._outputs.items()}


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (native libraries' log lines that
    Python's sys.stderr never sees), unless LIPSTREAM_LOG=debug."""
    if os.environ.get("LIPSTREAM_LOG", "").lower() == "debug":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
