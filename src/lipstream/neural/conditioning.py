"""From an avatar frame and mouth parameters to the network's input, and its output back into the frame.

One `Conditioner` per avatar and network: it keeps the crop geometry, the hidden and blend
masks at the network's size, the reference crop, and each source frame's lip model (built on
first use; about 8 ms each, kept for the renderer's life). The lip model is the one the warp
renderer uses (lipstream.motion.lip_model), on the source frame's own landmarks, so the sketch
the network sees when driven by audio is drawn exactly as in training (dataset.py).
"""

from __future__ import annotations

import numpy as np

from lipstream.neural.dataset import lip_controls
from lipstream.neural.geometry import CropGeometry, crop_frame, draw_sketch, warp_back
from lipstream.neural.layout import network_input


class Conditioner:
    """Inputs and compositing of one network (crop `size` pixels) for one AvatarPackage."""

    def __init__(self, avatar, geometry: CropGeometry, size: int, reference: int):
        self.avatar = avatar
        self.geometry = geometry
        self.size = size
        self.neutral_width = avatar.manifest.get("neutral_mouth_width")
        self.hidden = geometry.hidden_mask(size)
        self.blend = geometry.blend_mask(size)
        self.transforms = geometry.transforms(np.asarray(avatar.landmarks, np.float32), size)
        self.reference = crop_frame(np.asarray(avatar.frames[reference]), self.transforms[reference], size)
        self._models: dict[int, object] = {}

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

    def network_input(self, frame: np.ndarray, i: int, params: np.ndarray) -> np.ndarray:
        """Input (IN_CHANNELS, S, S) float32 for `frame` (source frame i, H x W x 3 uint8 RGB) with
        the mouth of params (4,)."""
        transform = self.transforms[i]
        crop = crop_frame(frame, transform, self.size).transpose(2, 0, 1).astype(np.float32)
        sketch = draw_sketch(self.controls(i, params), transform, self.size).astype(np.float32)
        x = network_input(crop, self.reference.transpose(2, 0, 1).astype(np.float32), sketch,
                          self.hidden[None].astype(np.float32), np.concatenate)
        return x.astype(np.float32)

    def warp_back(self, i: int, output: np.ndarray, frame_shape: tuple[int, ...]):
        """The network's output (3, S, S) float in [0, 1] for source frame i, warped back into
        the frame: (patch, box, alpha) for render.compose.paste_region."""
        crop = np.clip(output.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return warp_back(crop, self.transforms[i], self.blend, frame_shape)
