"""Running a TFLite model that contains custom ops no runtime here has, by cutting it at them.

MediaPipe's attention face mesh (face_landmark_with_attention.tflite) uses three MediaPipe
custom ops between ordinary TFLite ops. The model's graph is cut, in memory, into the runs of
ordinary ops between them; each run becomes a small TFLite model (same tensors and weights,
its own inputs and outputs) on ai-edge-litert, and the custom ops run in numpy
(face/mediapipe_ops.py) on the tensors passed between the pieces. The model file itself is
used unchanged. The graph is read and the pieces written with the TFLite flatbuffer schema
that ai-edge-litert ships.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from lipstream.errors import NotSupportedError
from lipstream.face.models import LITERT_MISSING, TfliteModel, model_path

CustomOp = Callable[[list[np.ndarray], dict], np.ndarray]


@dataclass(frozen=True)
class CustomCall:
    """One custom op of the graph: its name, input and output tensor names, and its options."""

    name: str
    inputs: tuple[str, ...]
    output: str
    options: dict


@dataclass(frozen=True)
class SplitGraph:
    """A model cut at its custom ops: pieces (TFLite model bytes, None where two custom ops or the
    graph's start leave no ordinary op between) and the custom calls that follow each piece (run
    in order: piece 0, calls 0, piece 1, calls 1, ...)."""

    pieces: tuple[bytes | None, ...]
    calls: tuple[tuple[CustomCall, ...], ...]


@functools.cache
def split_graph(name: str) -> SplitGraph:
    """Cut a bundled model at its custom ops (once per process: it takes about 0.2 s)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise NotSupportedError(LITERT_MISSING) from exc

    data = model_path(name).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    (graph,) = model.subgraphs
    codes = model.operatorCodes
    ops = graph.operators
    is_custom = [codes[op.opcodeIndex].customCode is not None for op in ops]
    producer = {int(o): k for k, op in enumerate(ops) for o in op.outputs}
    last_use = {int(o): len(ops) for o in graph.outputs}
    for k, op in enumerate(ops):
        for i in op.inputs:
            last_use[int(i)] = max(last_use.get(int(i), -1), k)
    pieces, calls = [], []
    k = 0
    while k < len(ops):
        start = k
        while k < len(ops) and not is_custom[k]:
            k += 1
        pieces.append(_piece(model, graph, start, k, producer, last_use) if k > start else None)
        group = []
        while k < len(ops) and is_custom[k]:
            op = ops[k]
            options = flexbuffers.Loads(bytes(op.customOptions)) if op.customOptions is not None else {}
            group.append(CustomCall(codes[op.opcodeIndex].customCode.decode(),
                                    tuple(_name(graph, i) for i in op.inputs), _name(graph, op.outputs[0]), options))
            k += 1
        calls.append(tuple(group))
    return SplitGraph(tuple(pieces), tuple(calls))


def _name(graph, index) -> str:
    return graph.tensors[int(index)].name.decode()


def _piece(model, graph, start: int, end: int, producer: dict[int, int], last_use: dict[int, int]) -> bytes:
    """TFLite model bytes of ops [start, end): inputs are the tensors they read that earlier ops
    made (or the graph's inputs), outputs the ones they make that later ops or the graph use.
    Weights the piece does not read are left out."""
    ops = graph.operators[start:end]
    read = [int(i) for op in ops for i in op.inputs if i >= 0]
    made = [int(o) for op in ops for o in op.outputs]
    constant = {i for i in read if _has_data(model.buffers[graph.tensors[i].buffer])}
    inputs = list(dict.fromkeys(i for i in read if i not in constant and producer.get(i, -1) < start))
    outputs = [o for o in made if last_use.get(o, -1) >= end]
    used_buffers = {graph.tensors[i].buffer for i in set(read) | set(made)}
    piece_graph = copy.copy(graph)
    piece_graph.operators, piece_graph.inputs, piece_graph.outputs = ops, inputs, outputs
    piece = copy.copy(model)
    piece.subgraphs, piece.signatureDefs = [piece_graph], None
    piece.buffers = [b if k in used_buffers or not _has_data(b) else _empty(b) for k, b in enumerate(model.buffers)]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(piece.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _has_data(buffer) -> bool:
    return buffer.data is not None and len(buffer.data) > 0


def _empty(buffer):
    empty = copy.copy(buffer)
    empty.data = None
    return empty


class SplitModel:
    """A bundled model with custom ops, run piece by piece; `ops` maps custom op names to numpy
    implementations f(inputs, options) -> output. `run` returns every tensor it computed, by name."""

    def __init__(self, name: str, ops: dict[str, CustomOp]):
        self.graph = split_graph(name)
        missing = {c.name for group in self.graph.calls for c in group} - set(ops)
        if missing:
            raise ValueError(f"{name} needs custom ops with no implementation here: {sorted(missing)}")
        self._ops = ops
        self._pieces = [TfliteModel(piece) if piece else None for piece in self.graph.pieces]

    @property
    def custom_calls(self) -> list[CustomCall]:
        return [call for group in self.graph.calls for call in group]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(inputs)
        for piece, group in zip(self._pieces, self.graph.calls):
            if piece is not None:
                values.update(piece.run({name: values[name] for name in piece.inputs}))
            for call in group:
                values[call.output] = self._ops[call.name]([values[i] for i in call.inputs], call.options)
        return values
