"""Face tracking with dense landmarks: detection (face/detector.py) then the face mesh (face/mesh.py).

Landmarks are float32 (478, 2) arrays of pixel (x, y) coordinates in the frame they were found
in, in MediaPipe's face-mesh order (468 mesh points with refined lips and eyes, then 10 iris
points); a frame without a face gives NaN. Frames are uint8 H x W x 3 RGB. The models are
MediaPipe's TFLite files, bundled and run on ai-edge-litert: no MediaPipe runtime is needed,
and the landmarks match MediaPipe 0.10.21's face mesh with refine_landmarks (docs/landmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lipstream.face.detector import FaceDetector
from lipstream.face.mesh import N_LANDMARKS, FaceMesh, Roi, roi_from_detection, roi_from_landmarks

# Names the landmark source; caches of landmarks computed by another source must not be reused.
LANDMARK_MODEL = "mediapipe-0.10.21-attention-face-mesh-litert"

__all__ = ["LANDMARK_MODEL", "N_LANDMARKS", "FaceTracker", "face_box", "track_faces"]


class FaceTracker:
    """Finds the largest face in each frame and returns its 478 landmarks.

    As MediaPipe's face_landmark_front graph tracks: with `video=True` (consecutive frames of one
    clip) the mesh's region comes from the previous frame's landmarks, and the detector runs
    again only when the mesh's face score falls below min_confidence; with `video=False` every
    image is detected afresh. Of up to max_faces detections, the one with the largest box is
    measured; `faces_in_last_frame` counts the faces seen in the last frame.
    """

    def __init__(self, video: bool = True, max_faces: int = 3, min_confidence: float = 0.5):
        self.video = video
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self._detector = FaceDetector(min_score=min_confidence)
        self._mesh = FaceMesh()
        self._tracked: Roi | None = None
        self.faces_in_last_frame = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Landmarks (478, 2) float32 pixels of the largest face in an RGB uint8 frame, NaN if none."""
        rgb = np.ascontiguousarray(rgb)
        if self._tracked is not None:
            landmarks, score = self._mesh(rgb, self._tracked)
            if score >= self.min_confidence:
                return self._found(landmarks, faces=1)
        detections = sorted(self._detector(rgb)[: self.max_faces], key=lambda d: d.area, reverse=True)
        for detection in detections:
            landmarks, score = self._mesh(rgb, roi_from_detection(detection))
            if score >= self.min_confidence:
                return self._found(landmarks, faces=len(detections))
        self._tracked = None
        self.faces_in_last_frame = 0
        return np.full((N_LANDMARKS, 2), np.nan, np.float32)

    def _found(self, landmarks: np.ndarray, faces: int) -> np.ndarray:
        self.faces_in_last_frame = faces
        self._tracked = roi_from_landmarks(landmarks) if self.video else None
        return landmarks

    def close(self) -> None:
        self._tracked = None

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track_faces(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Landmarks of the largest face in consecutive RGB frames: (T, 478, 2) float32, NaN where none."""
    with FaceTracker(video=True) as tracker:
        found = [tracker(f) for f in frames]
    return np.stack(found) if found else np.zeros((0, N_LANDMARKS, 2), np.float32)


def face_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) in pixels of one face's landmarks (478, 2)."""
    x0, y0 = np.nanmin(landmarks, axis=0)
    x1, y1 = np.nanmax(landmarks, axis=0)
    return float(x0), float(y0), float(x1), float(y1)
