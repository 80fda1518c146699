"""Compositing: paste a generated lower-face region back into the full frame without a seam."""

from __future__ import annotations

import cv2
import numpy as np


def box_mask(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The package's (128, 128) uint8 region mask resized to its box, as float32 (h, w, 1) in [0, 1]."""
    x0, y0, x1, y1 = (int(v) for v in box)
    resized = cv2.resize(np.asarray(mask), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return (resized.astype(np.float32) / 255.0)[..., None]


def paste_region(frame: np.ndarray, patch: np.ndarray, box: np.ndarray, alpha: np.ndarray,
                 in_place: bool = False) -> np.ndarray:
    """Blend `patch` (h, w, 3) uint8 into `frame` (H, W, 3) uint8 at box (x0, y0, x1, y1).

    alpha is (h, w, 1) float32 in [0, 1] (1 = patch). Returns a new frame and leaves `frame`
    unchanged, or with `in_place` (a frame the caller owns) blends into `frame` and returns it.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    out = frame if in_place else np.array(frame, copy=True)
    weight = np.ascontiguousarray(alpha.reshape(alpha.shape[:2]), np.float32)
    out[y0:y1, x0:x1] = cv2.blendLinear(np.ascontiguousarray(patch), np.ascontiguousarray(out[y0:y1, x0:x1]),
                                        weight, 1.0 - weight)
    return out
