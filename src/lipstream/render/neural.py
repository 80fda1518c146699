"""`neural`: the avatar's lower face drawn by a network trained on its own video (`lipstream train`).

Per output frame: the base frame (the footage looped back and forth, idle.IdleMotion); the lip
model of that frame's face turns the mouth parameters into a lip and jaw shape, drawn as a
sketch in the aligned crop (lipstream.neural.conditioning); the network draws the hidden lower
face from the masked crop, the sketch and a reference crop (with the warp head: the training
frame whose mouth is most like the one asked for, whose real pixels it moves at the frame's full
resolution); the drawing is warped back and blended with a feathered mask that fades out inside the hidden region, where the network saw
the real frame around it, so there is no seam. `render(track)` runs the network in batches.

Mouth (warp head): `mouth="textured"` (default) takes the network's drawing (closest to the true
mouth) with the moved reference frame's texture added band by band where the drawing is softer
than the footage (geometry.Texture: real teeth, lips and skin grain); `mouth="drawn"` the
drawing with fine texture off the lips only (soft lips and teeth); `mouth="real"` lips and teeth
from the moved reference frame (as sharp as the footage, but a mouth only like the one asked
for): see docs/neural.md.

Variants: `variant="auto"` takes the full network in fp16 on a CUDA GPU (the lite one if that is
all the package has), else the lite one in static INT8 (real time on a CPU); any (arch, variant)
the package holds can be asked for (lipstream.neural.runtime.VARIANTS). An avatar with no
trained network is refused with the command that trains one.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lipstream.errors import NotSupportedError
from lipstream.motion.params import MouthTrack
from lipstream.render.base import Renderer, register
from lipstream.render.compose import paste_region
from lipstream.render.idle import IdleMotion

BATCH = 16


@register
class NeuralRenderer(Renderer):
    name = "neural"

    def __init__(self, avatar, *, arch: str = "auto", variant: str = "auto", threads: int | None = None,
                 mouth: str = "textured", **options):
        super().__init__(avatar, **options)
        from lipstream.neural.conditioning import Conditioner
        from lipstream.neural.geometry import CropGeometry
        from lipstream.neural.runtime import default_choice, load_model, no_model_message

        if avatar.kind != "video" or not avatar.models.get("neural"):
            raise NotSupportedError(no_model_message(avatar))
        if arch == "auto" or variant == "auto":
            auto_arch, auto_variant = default_choice(avatar)
            arch = auto_arch if arch == "auto" else arch
            variant = (auto_variant if arch == auto_arch else "int8-static") if variant == "auto" else variant
        self.model = load_model(avatar, arch, variant, threads)
        entry = self.model.entry
        self.idle = IdleMotion(avatar, still=self.still, seed=self.seed)
        self.conditioner = Conditioner(avatar, CropGeometry.from_dict(entry["geometry"]), self.model.size,
                                       int(entry["reference"]), entry.get("references"), mouth)

    @property
    def variant(self) -> str:
        return f"{self.model.arch}/{self.model.variant}"

    def render_frame(self, k: int, params: np.ndarray) -> np.ndarray:
        """Frame k (H, W, 3) uint8 RGB with the mouth of params (4,) float32."""
        frame, _, i = self.idle.source(k)
        reference = self.conditioner.pick_reference(params, i)
        x = self.conditioner.network_input(frame, i, params, reference)
        return self.idle.animate(k, self.composite(frame, i, self.model.run(x[None])[0], params, reference))

    def composite(self, frame: np.ndarray, i: int, output: np.ndarray, params: np.ndarray, reference: int) -> np.ndarray:
        """Source frame i (H, W, 3) uint8, a copy of the footage's (idle.source), with the network's
        output (conditioning.warp_back) for the mouth params (4,) and reference frame blended in,
        in place (no second copy of the whole frame); returns it."""
        return paste_region(frame, *self.conditioner.warp_back(i, output, frame.shape, params, reference, frame),
                            in_place=True)

    def render(self, track: MouthTrack, first: int = 0) -> Iterator[np.ndarray]:
        """Frames first.. of `track`, the network run on BATCH frames at a time. The next batch's
        base frames, inputs and network run on a worker thread while this batch is composited
        (both mostly in numpy, OpenCV and onnxruntime, which release the GIL: on two cores the
        stages overlap); batches are prepared one after another, in order."""
        starts = list(range(0, len(track), BATCH))
        if not starts:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="neural-batch") as worker:
            pending = worker.submit(self._batch, track, first, starts[0])
            for following in starts[1:] + [None]:
                rows, ks, sources, references, out = pending.result()
                if following is not None:
                    pending = worker.submit(self._batch, track, first, following)
                for r, k, (frame, _, i), ref, y in zip(rows, ks, sources, references, out):
                    yield self.idle.animate(k, self.composite(frame, i, y, track.values[r], ref))

    def _batch(self, track: MouthTrack, first: int, start: int):
        """Rows start..start+BATCH of `track`: (rows, output frame indices, base frames
        (idle.source), reference frames picked, the network's outputs (B, C, S, S))."""
        rows = range(start, min(start + BATCH, len(track)))
        ks = [first + r for r in rows]
        sources = [self.idle.source(k) for k in ks]
        references = [self.conditioner.pick_reference(track.values[r], i) for r, (_, _, i) in zip(rows, sources)]
        x = np.stack([self.conditioner.network_input(frame, i, track.values[r], ref)
                      for r, (frame, _, i), ref in zip(rows, sources, references)])
        return rows, ks, sources, references, self.model.run(x)
