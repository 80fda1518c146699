"""Mouth geometry on MediaPipe face-mesh landmarks, and measurements normalised by face size.

Measures are divided by the distance between the outer eye corners, so they compare across
resolutions and faces. The evaluator, the drivers' accuracy benchmark and the tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Lip contours, each from the left mouth corner to the right one (image left/right).
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIP_INDICES = tuple(sorted(set(OUTER_UPPER + OUTER_LOWER + INNER_UPPER + INNER_LOWER)))  # 40 points
# Pairs of inner-lip points facing each other across the mouth opening (upper, lower).
APERTURE_PAIRS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (61, 291)
EYE_OUTER_CORNERS = (33, 263)
CHIN = 152
NOSE_TIP = 1
# Jaw line from the left ear region under the chin to the right one.
JAW_LINE = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)


@dataclass
class MouthMeasures:
    """Per-frame mouth measures, each (T,) float32, NaN where no face was found.

    aperture: mean inner-lip opening / eye distance; width: mouth-corner distance / eye distance;
    eye_distance: outer-eye-corner distance in pixels.
    """

    aperture: np.ndarray
    width: np.ndarray
    eye_distance: np.ndarray


def measure_mouth(landmarks: np.ndarray) -> MouthMeasures:
    """Mouth measures from landmarks (T, 478, 2) or (478, 2) in pixels."""
    lm = np.asarray(landmarks, np.float32)
    if lm.ndim == 2:
        lm = lm[None]
    eye = _dist(lm[:, EYE_OUTER_CORNERS[0]], lm[:, EYE_OUTER_CORNERS[1]])
    opening = np.mean([_dist(lm[:, u], lm[:, d]) for u, d in APERTURE_PAIRS], axis=0)
    width = _dist(lm[:, MOUTH_CORNERS[0]], lm[:, MOUTH_CORNERS[1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return MouthMeasures(aperture=opening / eye, width=width / eye, eye_distance=eye)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1).astype(np.float32)
