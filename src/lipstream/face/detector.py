"""Face detection with MediaPipe's short-range BlazeFace model, decoded as its graph does.

The image is letterboxed into a 128x128 input in [-1, 1] (black borders). The model scores 896
SSD anchors (a 16x16 grid of stride 8 with 2 anchors per cell, then an 8x8 grid of stride 16
with 6) and regresses per anchor a box and 6 keypoints (the subject's right eye, left eye, nose
tip, mouth centre, right ear tragion, left ear tragion) as offsets in input pixels from the
anchor centre. Scores are sigmoids of the logits clipped to +-100; overlapping boxes are merged
by score-weighted non-maximum suppression. Settings: MediaPipe 0.10.21's
face_detection_short_range graph (SsdAnchorsCalculator, TensorsToDetectionsCalculator,
NonMaxSuppressionCalculator options).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipstream.face.models import DETECTOR_MODEL, TfliteModel

ANCHOR_STRIDES = (8, 16, 16, 16)  # one per SSD layer; layers of equal stride share a grid
ANCHORS_PER_LAYER = 2  # aspect ratio 1 plus the interpolated scale, all of fixed size 1
NUM_KEYPOINTS = 6
RIGHT_EYE, LEFT_EYE = 0, 1  # keypoint indices (the subject's right eye is on the image left)
SCORE_CLIP = 100.0
NMS_IOU = 0.3


@dataclass
class Detection:
    """One face: box (4,) x0, y0, x1, y1 and keypoints (6, 2) x, y, in frame pixels; score in [0, 1]."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def ssd_anchors(input_size: int = 128) -> np.ndarray:
    """Anchor centres (896, 2) float32 x, y as fractions of the square input, in the model's order:
    grid by grid, row by row, cell by cell, each cell's anchors together."""
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        same = sum(1 for s in ANCHOR_STRIDES[layer:] if s == stride)
        cells = -(-input_size // stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, same * ANCHORS_PER_LAYER, axis=0))
        layer += same
    return np.concatenate(centres).astype(np.float32)


class FaceDetector:
    """Faces in an RGB uint8 frame (H, W, 3), best first; `min_score` in [0, 1]."""

    def __init__(self, min_score: float = 0.5):
        self.min_score = min_score
        self._model = TfliteModel(DETECTOR_MODEL)
        ((self._input, spec),) = self._model.inputs.items()
        self._size = int(spec["shape"][1])
        self._anchors = ssd_anchors(self._size)

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        side = float(max(h, w))
        scale = self._size / side
        # Letterbox: the frame centred in a black square of its long side, scaled to the input.
        to_input = np.array([[scale, 0, (side - w) / 2 * scale], [0, scale, (side - h) / 2 * scale]], np.float32)
        image = cv2.warpAffine(rgb, to_input, (self._size, self._size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = image[None].astype(np.float32) / 127.5 - 1.0
        out = self._model.run({self._input: x})
        boxes, keypoints, scores = decode(out["regressors"][0], out["classificators"][0, :, 0], self._anchors,
                                          self._size, self.min_score)
        found = []
        offset = np.array([(w - side) / 2, (h - side) / 2], np.float32)  # of the square's corner, in frame pixels
        for box, points, score in weighted_nms(boxes, keypoints, scores, NMS_IOU):
            found.append(Detection(box=(box.reshape(2, 2) * side + offset).ravel(),
                                   keypoints=points * side + offset, score=float(score)))
        return found


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (K, 4) x0, y0, x1, y1 and keypoints (K, 6, 2) as fractions of the input, and scores (K,)
    of the anchors scoring at least min_score. regressors: (896, 16) input pixels; logits: (896,)."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    keep = scores >= min_score
    raw, centres = regressors[keep] / input_size, anchors[keep]
    middle = raw[:, :2] + centres
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([middle - half, middle + half], axis=1)
    keypoints = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + centres[:, None]
    return boxes, keypoints, scores[keep]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float):
    """Score-weighted non-maximum suppression: yields (box (4,), keypoints (K, 2), score) best first.

    Each group is the best remaining box and every remaining box overlapping it by IoU above the
    threshold; its box and keypoints are the score-weighted means of the group, its score the best's.
    """
    remaining = np.argsort(-scores, kind="stable")
    while len(remaining):
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining]) > iou_threshold
        overlap[0] = True  # the best box leads its group even if it has no area
        group, remaining = remaining[overlap], remaining[~overlap]
        weights = scores[group] / scores[group].sum()
        yield (weights @ boxes[group], np.einsum("g,gkd->kd", weights, keypoints[group]), scores[best])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
