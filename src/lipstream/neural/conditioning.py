"""From an avatar frame and mouth parameters to the network's input, and its output back into the frame.

One `Conditioner` per avatar and network: it keeps the crop geometry, the hidden and blend
masks at the network's size, the reference crop (or, for the warp head, the candidate
reference frames and a picker: references.py), and each source frame's lip model (built on
first use; about 8 ms each, kept for the renderer's life). The lip model is the one the warp
renderer uses (lipstream.motion.lip_model), on the source frame's own landmarks, so the sketch
the network sees when driven by audio is drawn exactly as in training (dataset.py).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from lipstream.errors import NotSupportedError
from lipstream.face import align
from lipstream.neural.dataset import lip_controls
from lipstream.neural.geometry import (CropGeometry, Sharpness, Texture, blend_bounds, crop_frame, detail_weight,
                                       draw_sketch, reference_sharpness, warp_back, warp_back_parts)
from lipstream.neural.layout import network_input
from lipstream.neural.references import ReferencePicker

REFERENCE_CACHE = 48  # reference crops kept
# Warp head's mouth: the drawing given the footage's texture band by band (geometry.Texture), the
# drawing with fine skin texture off the lips only, or lips and mouth from the moved reference.
MOUTHS = ("textured", "drawn", "real")


class Conditioner:
    """Inputs and compositing of one network (crop `size` pixels) for one AvatarPackage."""

    def __init__(self, avatar, geometry: CropGeometry, size: int, reference: int, references: dict | None = None,
                 mouth: str = "textured"):
        self.avatar = avatar
        self.geometry = geometry
        self.size = size
        self.neutral_width = avatar.manifest.get("neutral_mouth_width")
        self.hidden = geometry.hidden_mask(size)
        self.blend = geometry.blend_mask(size)
        self.transforms = geometry.transforms(np.asarray(avatar.landmarks, np.float32), size)
        self.bounds = blend_bounds(self.blend)
        self.reference_index = reference
        self.reference_frame = np.asarray(avatar.frames[reference])
        self.reference = crop_frame(self.reference_frame, self.transforms[reference], size)
        self._models: dict[int, object] = {}
        if mouth not in MOUTHS:
            raise NotSupportedError(f"unknown mouth {mouth!r}; one of: {', '.join(MOUTHS)}")
        self.real_mouth = mouth == "real"
        self.texture = Texture() if mouth == "textured" else None
        self.ring = None  # the textured mouth's skin ring (geometry.Texture); the pasted box reaches it
        if self.texture is not None:
            self.ring = geometry.skin_ring(size, self.texture.ring_reach)
            self.bounds = blend_bounds(np.maximum(self.blend, self.ring))
        self.picker = None
        if references:
            pose = np.asarray(avatar.bank["frame_pose"], np.float32)  # head pose per frame (avatar.bank)
            self.poses = pose.reshape(len(pose), -1)
            frames = np.asarray(references["frames"], np.int64)
            self.picker = ReferencePicker(frames, references["params"], self.poses[frames])
        self._reference_crops: OrderedDict[int, np.ndarray] = OrderedDict()
        self._reference_lips: dict[int, np.ndarray] = {}
        self._reference_focus: dict[int, Sharpness] = {}

    def lip_model(self, i: int):
        """The lip model of source frame i (cached)."""
        if i not in self._models:
            from lipstream.motion.lip_model import LipModel

            self._models[i] = LipModel(np.asarray(self.avatar.landmarks[i], np.float32), self.neutral_width)
        return self._models[i]

    def controls(self, i: int, params: np.ndarray) -> np.ndarray:
        """The lip model's control points (61, 2) frame pixels of source frame i for params (4,)."""
        return lip_controls(None, np.asarray(params, np.float32), None, self.lip_model(i))

    def fitted_params(self, i: int) -> np.ndarray:
        """Mouth parameters (4,) fitted to source frame i's own landmarks (its true lip shape)."""
        return self.lip_model(i).fit(np.asarray(self.avatar.landmarks[i], np.float32))

    def pick_reference(self, params: np.ndarray, i: int) -> int:
        """The frame the network gets as reference for mouth params (4,) drawn into source frame
        i: the picker's choice (warp head; call once per output frame, in order), else the
        fixed reference."""
        return self.picker.pick(params, self.poses[i]) if self.picker is not None else self.reference_index

    def reference_crop(self, r: int) -> np.ndarray:
        """The (S, S, 3) uint8 crop of source frame r (cached)."""
        if r == self.reference_index:
            return self.reference
        if r not in self._reference_crops:
            self._reference_crops[r] = crop_frame(np.asarray(self.avatar.frames[r]), self.transforms[r], self.size)
            if len(self._reference_crops) > REFERENCE_CACHE:
                self._reference_crops.popitem(last=False)
        self._reference_crops.move_to_end(r)
        return self._reference_crops[r]

    def reference_focus(self, r: int) -> Sharpness:
        """How sharp source frame r is, in its own pixels, where the textured mouth goes
        (geometry.reference_sharpness; cached: a reference is used for many frames)."""
        if r not in self._reference_focus:
            self._reference_focus[r] = reference_sharpness(np.asarray(self.avatar.frames[r]), self.transforms[r],
                                                           self.blend, self.ring, self.bounds)
        return self._reference_focus[r]

    def network_input(self, frame: np.ndarray, i: int, params: np.ndarray, reference: int | None = None) -> np.ndarray:
        """Input (IN_CHANNELS, S, S) float32 for `frame` (source frame i, H x W x 3 uint8 RGB) with
        the mouth of params (4,), given source frame `reference` (default: the fixed one)."""
        transform = self.transforms[i]
        crop = crop_frame(frame, transform, self.size).transpose(2, 0, 1).astype(np.float32)
        sketch = draw_sketch(self.controls(i, params), transform, self.size).astype(np.float32)
        ref = self.reference_crop(self.reference_index if reference is None else reference)
        x = network_input(crop, ref.transpose(2, 0, 1).astype(np.float32), sketch,
                          self.hidden[None].astype(np.float32), np.concatenate)
        return x.astype(np.float32)

    def detail(self, i: int, params: np.ndarray, reference: int) -> np.ndarray:
        """Where the reference's fine texture may be added (geometry.detail_weight) for source
        frame i drawn with the mouth of params (4,): off the lips asked for and the reference's."""
        if reference not in self._reference_lips:
            self._reference_lips[reference] = align.apply(self.transforms[reference],
                                                          self.controls(reference, self.fitted_params(reference)))
        asked = align.apply(self.transforms[i], self.controls(i, params))
        return detail_weight([asked, self._reference_lips[reference]], self.size)

    def warp_back(self, i: int, output: np.ndarray, frame_shape: tuple[int, ...], params: np.ndarray | None = None,
                  reference: int | None = None, frame: np.ndarray | None = None):
        """The network's output for source frame i, (3, S, S) float in [0, 1] (rgb head) or its
        parts (6, S, S) (warp head: the reference frame it was given, moved at full resolution,
        and its fine texture off the lips when the mouth `params` (4,) are given), warped back
        into the frame: (patch, box, alpha) for render.compose.paste_region. `frame` (H, W, 3)
        uint8, the frame drawn into, sets how sharp the texture is (geometry.Texture)."""
        if output.shape[0] != 3:
            r = self.reference_index if reference is None else reference
            detail = None if params is None or self.texture is not None else self.detail(i, params, r)
            focus = self.reference_focus(r) if self.texture is not None else None
            return warp_back_parts(output, self.transforms[i], self.blend, frame_shape, np.asarray(self.avatar.frames[r]),
                                   self.transforms[r], self.bounds, detail, self.real_mouth, self.texture, frame,
                                   self.ring, focus)
        crop = np.clip(output.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return warp_back(crop, self.transforms[i], self.blend, frame_shape, self.bounds)
