"""MediaPipe's three TFLite custom ops of the attention face mesh, in numpy (version 2 of each).

They follow mediapipe/util/tflite/operations/{landmarks_to_transform_matrix,
transform_tensor_bilinear,transform_landmarks}.cc: the mesh's coarse points choose a rotated
box around the lips or an eye (Landmarks2TransformMatrix), features are sampled from that box
(TransformTensorBilinear), and the refined points found there are mapped back
(TransformLandmarks). Matrices are (1, 4, 4) float32 mapping output (x, y, 0, 1) to input
coordinates; only their first two rows matter.
"""

from __future__ import annotations

import numpy as np


def landmarks_to_transform_matrix(inputs: list[np.ndarray], options: dict) -> np.ndarray:
    """Matrix (1, 4, 4) from an output_width x output_height grid to the box around the points
    `subset_idxs` of landmarks (1, N, 3), turned so the line from point left_rotation_idx to
    right_rotation_idx is at target_rotation_radians, scaled by (scale_x, scale_y)."""
    points = inputs[0].reshape(-1, 3)[:, :2].astype(np.float64)
    (lx, ly), (rx, ry) = points[options["left_rotation_idx"]], points[options["right_rotation_idx"]]
    rotation = options["target_rotation_radians"] - np.arctan2(ry - ly, rx - lx)
    level = _rotation(rotation)
    subset = points[list(options["subset_idxs"])] @ level.T
    high, low = subset.max(axis=0), subset.min(axis=0)
    centre = level.T @ ((high + low) / 2)
    width, height = options["output_width"], options["output_height"]
    scale = np.diag([options["scale_x"] * (high - low)[0] / width, options["scale_y"] * (high - low)[1] / height])
    linear = _rotation(-rotation) @ scale
    matrix = np.eye(4)
    matrix[:2, :2] = linear
    matrix[:2, 3] = centre - linear @ [width / 2, height / 2]
    return matrix[None].astype(np.float32)


def transform_tensor_bilinear(inputs: list[np.ndarray], options: dict) -> np.ndarray:
    """Features (1, output_height, output_width, C) sampled bilinearly from features (1, H, W, C)
    at the matrix's image of each output pixel (pixel centres aligned); 0 where that falls
    outside the input."""
    features, matrix = inputs[0][0].astype(np.float64), inputs[1].reshape(4, 4).astype(np.float64)
    linear = matrix[:2, :2]
    shift = matrix[:2, 3] + linear.sum(axis=1) * 0.5 - 0.5  # align corners
    out_h, out_w = options["output_height"], options["output_width"]
    ys, xs = np.mgrid[0:out_h, 0:out_w]
    x, y = (np.stack([xs.ravel(), ys.ravel()], axis=1) @ linear.T + shift).T
    in_h, in_w = features.shape[:2]
    outside = (x < 0) | (x > in_w - 1) | (y < 0) | (y > in_h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, in_w - 1)
    y0 = np.clip(np.floor(y).astype(int), 0, in_h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    padded = np.pad(features, ((0, 1), (0, 1), (0, 0)))  # the row and column past the edge read 0
    upper = (1 - fx) * padded[y0, x0] + fx * padded[y0, x0 + 1]
    lower = (1 - fx) * padded[y0 + 1, x0] + fx * padded[y0 + 1, x0 + 1]
    sampled = (1 - fy) * upper + fy * lower
    sampled[outside] = 0
    return sampled.reshape(1, out_h, out_w, -1).astype(np.float32)


def transform_landmarks(inputs: list[np.ndarray], options: dict) -> np.ndarray:
    """Points (1, N, 2) mapped by the matrix (1, 4, 4)."""
    points, matrix = inputs[0][0].astype(np.float64), inputs[1].reshape(4, 4).astype(np.float64)
    return (points @ matrix[:2, :2].T + matrix[:2, 3])[None].astype(np.float32)


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


MEDIAPIPE_OPS = {
    "Landmarks2TransformMatrix": landmarks_to_transform_matrix,
    "TransformTensorBilinear": transform_tensor_bilinear,
    "TransformLandmarks": transform_landmarks,
}
