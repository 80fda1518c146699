"""Face detection and dense landmarks (MediaPipe face mesh, 478 points, models in its wheel).

Landmarks are float32 (478, 2) arrays of pixel (x, y) coordinates in the frame they were found
in; a frame without a face gives NaN. Frames are uint8 H x W x 3 RGB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable

import numpy as np

from lipstream.errors import NotSupportedError

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging, before it is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

N_LANDMARKS = 478
log = logging.getLogger(__name__)


def _face_mesh_module():
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise NotSupportedError(
            "MediaPipe 0.10.21 is needed for face landmarks: pip install --no-deps mediapipe==0.10.21 "
            "(newer releases ship no face model)"
        ) from exc
    return face_mesh


class FaceTracker:
    """Finds the largest face in each frame and returns its 478 landmarks.

    `video=True` tracks from frame to frame (fast, for consecutive frames of one clip);
    `video=False` detects afresh in every image.
    """

    def __init__(self, video: bool = True, max_faces: int = 3, min_confidence: float = 0.5):
        with _native_stderr_silenced():
            self._mesh = _face_mesh_module().FaceMesh(
                static_image_mode=not video,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
        self.faces_in_last_frame = 0
        self._started = False

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Landmarks (478, 2) of the largest face in an RGB uint8 frame, NaN if none."""
        h, w = rgb.shape[:2]
        with _native_stderr_silenced() if not self._started else contextlib.nullcontext():
            result = self._mesh.process(np.ascontiguousarray(rgb))
        self._started = True
        faces = result.multi_face_landmarks or []
        self.faces_in_last_frame = len(faces)
        if not faces:
            return np.full((N_LANDMARKS, 2), np.nan, np.float32)
        meshes = [np.array([(p.x * w, p.y * h) for p in f.landmark], np.float32) for f in faces]
        return max(meshes, key=_face_area)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what MediaPipe's C++ code prints to stderr while its graph starts (absl warnings
    about TFLite delegates and feedback tensors that GLOG_minloglevel does not reach)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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


def _face_area(landmarks: np.ndarray) -> float:
    x0, y0, x1, y1 = face_box(landmarks)
    return (x1 - x0) * (y1 - y0)
