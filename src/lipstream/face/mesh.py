"""Dense face landmarks with MediaPipe's attention face mesh (478 points), decoded as its graph does.

The model sees a 192x192 crop in [0, 1] of a square region of interest (ROI) rotated so the
eyes are level. It gives 468 mesh points (x, y, z) in crop pixels, a face-presence logit, and
refined points for the lips (80), each eye's contour (71 each) and the irises (5 each); the
refined lips and eyes replace those mesh points, the irises follow as points 468-477 (MediaPipe's
LandmarksRefinementCalculator; the indices a region replaces are the ones its crop is built
from, the `subset_idxs` of its Landmarks2TransformMatrix op). The ROI comes from a face
detection (box centre, rotation from the eye keypoints) or, in video, from the previous
frame's landmarks (their bounding box, rotation from the outer eye corners 33 and 263),
enlarged 1.5 times around its centre and squared to its long side. Settings: MediaPipe
0.10.21's face_landmark_front_cpu graph with refine_landmarks (FaceDetectionFrontDetectionToRoi,
FaceLandmarkCpu, FaceLandmarkLandmarksToRoi).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipstream.face.detector import LEFT_EYE, RIGHT_EYE, Detection
from lipstream.face.mediapipe_ops import MEDIAPIPE_OPS
from lipstream.face.models import MESH_MODEL
from lipstream.face.split_model import SplitModel

N_MESH_POINTS = 468
N_LANDMARKS = 478  # the mesh, then the left iris (468-472) and the right iris (473-477)
CROP_SIZE = 192
# The refined regions' outputs, in the order of the model's Landmarks2TransformMatrix ops.
REGION_OUTPUTS = ("output_lips", "output_left_eye", "output_right_eye")
IRIS_OUTPUTS = ("output_left_iris", "output_right_iris")
ROI_SCALE = 1.5
# Outer eye corners: the subject's right (image left) and left.
ROTATION_POINTS = (33, 263)


@dataclass
class Roi:
    """A square region of a frame: centre (x, y) and side in pixels, rotation in radians
    (positive turns the region's x axis from the image's x axis towards its y axis, i.e.
    clockwise on screen)."""

    centre: np.ndarray
    side: float
    rotation: float

    def to_frame(self, crop_size: int) -> np.ndarray:
        """Affine (2, 3) from crop pixels (0..crop_size along each side) to frame pixels."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        linear = np.array([[c, -s], [s, c]]) * (self.side / crop_size)
        shift = self.centre - linear @ np.array([crop_size / 2, crop_size / 2])
        return np.concatenate([linear, shift[:, None]], axis=1)


def roi_from_detection(detection: Detection) -> Roi:
    """The landmark model's ROI for a detected face: its box, turned to level the eyes."""
    box = detection.box
    eyes = detection.keypoints[[RIGHT_EYE, LEFT_EYE]]
    return _roi(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), box[2:] - box[:2], eyes)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """The ROI to track a face into the next frame, from its landmarks (478, 2) in pixels."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    return _roi((low + high) / 2, high - low, landmarks[list(ROTATION_POINTS)])


def _roi(centre: np.ndarray, size: np.ndarray, eyes: np.ndarray) -> Roi:
    (x0, y0), (x1, y1) = eyes
    rotation = float(np.arctan2(y1 - y0, x1 - x0))  # MediaPipe: 0 - atan2(-(y1 - y0), x1 - x0)
    return Roi(centre=np.asarray(centre, np.float64), side=float(max(size) * ROI_SCALE), rotation=rotation)


class FaceMesh:
    """478 landmarks of the face inside an ROI of an RGB uint8 frame (H, W, 3)."""

    def __init__(self):
        self._model = SplitModel(MESH_MODEL, MEDIAPIPE_OPS)
        regions = [c.options["subset_idxs"] for c in self._model.custom_calls if c.name == "Landmarks2TransformMatrix"]
        self._regions = [np.asarray(r) for r in regions]
        if len(self._regions) != len(REGION_OUTPUTS):
            raise ValueError(f"{MESH_MODEL}: expected {len(REGION_OUTPUTS)} refined regions, found {len(regions)}")

    def __call__(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """Landmarks (478, 2) float32 frame pixels and the face-presence score in [0, 1]."""
        to_frame = roi.to_frame(CROP_SIZE)
        crop = cv2.warpAffine(rgb, cv2.invertAffineTransform(to_frame), (CROP_SIZE, CROP_SIZE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = self._model.run({"input_1": crop[None].astype(np.float32) / 255.0})
        points = out["output_mesh_identity"].reshape(N_MESH_POINTS, 3)[:, :2].astype(np.float64)
        for indices, name in zip(self._regions, REGION_OUTPUTS):
            points[indices] = out[name].reshape(len(indices), 2)
        irises = [out[name].reshape(-1, 2) for name in IRIS_OUTPUTS]
        crop_xy = np.vstack([points, *irises])
        landmarks = crop_xy @ to_frame[:, :2].T + to_frame[:, 2]
        score = 1.0 / (1.0 + np.exp(-float(out["conv_faceflag"].ravel()[0])))
        return landmarks.astype(np.float32), score
