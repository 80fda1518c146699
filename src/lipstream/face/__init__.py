"""Faces: detection and tracking with dense landmarks, jitter smoothing, mouth measurements."""

from lipstream.face.landmarks import FaceTracker, track_faces
from lipstream.face.mouth import MouthMeasures, measure_mouth

__all__ = ["FaceTracker", "MouthMeasures", "measure_mouth", "track_faces"]
