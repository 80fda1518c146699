"""The lower-face region renderers may change: mouth, lips, jaw and chin, with a soft edge.

The region is the polygon under the nose bounded by the jaw line, joined with the same polygon
moved down by CHIN_ROOM (so an opening jaw has room below the chin), grown by a margin and
feathered for seamless blending.
"""

from __future__ import annotations

import cv2
import numpy as np

from lipstream.face.mouth import EYE_OUTER_CORNERS, JAW_LINE

SUBNASALE = 2
# Fractions of the outer-eye-corner distance.
REGION_MARGIN = 0.12
REGION_FEATHER = 0.08
# Room below the chin for an opening jaw (a wide-open jaw drops the chin ~0.25 eye distances).
CHIN_ROOM = 0.25


def lower_face_polygon(landmarks: np.ndarray) -> np.ndarray:
    """Polygon (K, 2) float32 around mouth and jaw for one face's landmarks (478, 2) in pixels."""
    top_y = landmarks[SUBNASALE, 1]
    jaw = landmarks[list(JAW_LINE)]
    below = jaw[jaw[:, 1] >= top_y]
    if len(below) < 3:
        below = jaw
    left, right = below[0], below[-1]
    top_left = np.array([left[0], top_y], np.float32)
    top_right = np.array([right[0], top_y], np.float32)
    return np.vstack([top_left, below, top_right]).astype(np.float32)


def lower_face_region(landmarks: np.ndarray, frame_shape: tuple[int, ...], mask_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Box (x0, y0, x1, y1) int32 in frame pixels and a (mask_size, mask_size) uint8 soft mask.

    The mask covers the box, 255 inside the grown polygon, fading to 0 over the feather width.
    """
    height, width = frame_shape[:2]
    eye = float(np.linalg.norm(landmarks[EYE_OUTER_CORNERS[0]] - landmarks[EYE_OUTER_CORNERS[1]]))
    margin, feather = REGION_MARGIN * eye, REGION_FEATHER * eye
    polygon = lower_face_polygon(landmarks)
    dropped = polygon + np.array([0.0, CHIN_ROOM * eye], np.float32)
    grow = margin + 2 * feather
    corners = np.vstack([polygon, dropped])
    x0, y0 = np.floor(corners.min(axis=0) - grow).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0) + grow).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    box_w, box_h = max(x1 - x0, 1), max(y1 - y0, 1)
    scale = np.array([mask_size / box_w, mask_size / box_h], np.float32)
    mask = np.zeros((mask_size, mask_size), np.uint8)
    for shape in (polygon, dropped):
        cv2.fillPoly(mask, [np.round((shape - [x0, y0]) * scale).astype(np.int32)], 255)
    grow_px = max(int(round(margin * scale.mean())), 1)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1,) * 2))
    sigma = max(feather * float(scale.mean()) / 2, 0.5)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return np.array([x0, y0, x1, y1], np.int32), mask
