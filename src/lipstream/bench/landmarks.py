"""Landmark parity: lipstream's face tracker (MediaPipe's TFLite models on ai-edge-litert, our own
pre/post-processing) against MediaPipe 0.10.21's own face mesh, the runtime it replaced.

Per clip (*.mp4, tracked as video): Pearson r of the inner-lip aperture tracks (`measure_mouth(...).aperture`, inner-lip
opening / outer-eye-corner distance), the median absolute aperture difference in those units,
the median and largest landmark distance (all 478 points and the 40 lip points) in pixels and
in eye distances, and each tracker's time per frame. The reference is MediaPipe's
`solutions.face_mesh` in video mode with refine_landmarks=True, max_num_faces=3 (what lipstream
ran before). Photos in the folder (*.png, *.jpg) are compared one by one in image mode: landmark
distances only. MediaPipe is not a dependency of lipstream: it is imported only here, and without
it this bench stops and says what to install.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image

from lipstream.bench.machine import machine_info
from lipstream.errors import NotSupportedError
from lipstream.face import measure_mouth
from lipstream.face.landmarks import LANDMARK_MODEL, N_LANDMARKS, FaceTracker
from lipstream.face.models import native_stderr_silenced
from lipstream.face.mouth import EYE_OUTER_CORNERS, LIP_INDICES

MEDIAPIPE_VERSION = "0.10.21"
APERTURE_R_BAR = 0.95
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")

Tracker = Callable[[np.ndarray], np.ndarray]


def run_landmark_bench(media_dir: Path) -> dict:
    """Compare the trackers on every *.mp4 in media_dir; a JSON-ready dict with the machine."""
    face_mesh = _mediapipe_face_mesh()
    paths = sorted(Path(media_dir).glob("*.mp4"))
    if not paths:
        raise NotSupportedError(f"no *.mp4 files in {media_dir}; the landmark bench needs videos of faces")
    clips = []
    seconds = {"lipstream": 0.0, "mediapipe": 0.0}
    timed_frames = 0
    for path in paths:
        frames = _decoded_rgb(path)
        timed_frames += len(frames) - 1
        with FaceTracker(video=True) as tracker:
            ours, seconds["lipstream"] = _timed(tracker, frames, seconds["lipstream"])
        # MediaPipe's graph threads log (TFLite delegates, feedback tensors) while it starts and runs.
        with native_stderr_silenced(), face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=3, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
            reference, seconds["mediapipe"] = _timed(_mediapipe_tracker(mesh), frames, seconds["mediapipe"])
        clips.append({"clip": path.stem, "frames": len(frames), **compare(ours, reference)})
    photos = [_compare_photo(path, face_mesh) for path in sorted(Path(media_dir).iterdir())
              if path.suffix.lower() in PHOTO_SUFFIXES]
    return {
        "benchmark": "landmarks",
        "media_dir": str(media_dir),
        "tracker": LANDMARK_MODEL,
        "reference": f"mediapipe {MEDIAPIPE_VERSION} solutions.face_mesh, video mode, max_num_faces=3, "
                     "refine_landmarks=True",
        "measure": "aperture: inner-lip opening / outer-eye distance (measure_mouth); r: Pearson over the frames "
                   "where both found the face; point distances over all 478 points and the 40 lip points",
        "bar": f"aperture r >= {APERTURE_R_BAR} on every clip",
        "summary": {
            "min_aperture_r": round(min(c["aperture_r"] for c in clips), 4),
            "median_aperture_r": _median(c["aperture_r"] for c in clips),
            "max_aperture_median_abs_diff": round(max(c["aperture_median_abs_diff"] for c in clips), 5),
            "max_point_distance_px": round(max(c["max_point_distance_px"] for c in clips), 3),
            "frames_found": {"lipstream": sum(c["found_lipstream"] for c in clips),
                             "mediapipe": sum(c["found_mediapipe"] for c in clips)},
            "passes_bar": all(c["aperture_r"] >= APERTURE_R_BAR for c in clips),
            "ms_per_frame": {name: round(1000 * s / timed_frames, 2) for name, s in seconds.items()},
            "frames_timed": timed_frames,
        },
        "clips": clips,
        "photos": photos,
        "machine": machine_info(),
    }


def compare(ours: np.ndarray, reference: np.ndarray) -> dict:
    """Aperture agreement and landmark distances of two tracks (T, 478, 2) of one clip."""
    found_ours, found_reference = _found(ours), _found(reference)
    both = found_ours & found_reference
    a, b = measure_mouth(ours[both]).aperture, measure_mouth(reference[both]).aperture
    eye = np.linalg.norm(reference[both][:, EYE_OUTER_CORNERS[0]] - reference[both][:, EYE_OUTER_CORNERS[1]], axis=1)
    pixels = np.linalg.norm(ours[both] - reference[both], axis=2)
    lips = list(LIP_INDICES)
    return {
        "found_lipstream": int(found_ours.sum()),
        "found_mediapipe": int(found_reference.sum()),
        "frames_compared": int(both.sum()),
        "aperture_r": round(float(np.corrcoef(a, b)[0, 1]), 5) if len(a) > 2 and np.std(b) > 0 else None,
        "aperture_median_abs_diff": round(float(np.median(np.abs(a - b))), 6) if len(a) else None,
        "aperture_mean": round(float(np.mean(b)), 4) if len(b) else None,
        "median_point_distance_px": round(float(np.median(pixels)), 4) if len(a) else None,
        "median_lip_point_distance_px": round(float(np.median(pixels[:, lips])), 4) if len(a) else None,
        "max_point_distance_px": round(float(pixels.max()), 4) if len(a) else None,
        "median_point_distance_eye": round(float(np.median(pixels / eye[:, None])), 6) if len(a) else None,
    }


def _compare_photo(path: Path, face_mesh) -> dict:
    """Landmark distances (px) between the trackers in image mode on one photo."""
    rgb = np.array(Image.open(path).convert("RGB"))
    with FaceTracker(video=False) as tracker:
        ours = tracker(rgb)
    with native_stderr_silenced(), face_mesh.FaceMesh(static_image_mode=True, max_num_faces=3,
                                                      refine_landmarks=True, min_detection_confidence=0.5) as mesh:
        reference = _mediapipe_tracker(mesh)(rgb)
    pixels = np.linalg.norm(ours - reference, axis=1)
    found = not np.isnan(pixels).any()
    return {"photo": path.name, "size": [rgb.shape[1], rgb.shape[0]],
            "found_lipstream": bool(not np.isnan(ours).any()), "found_mediapipe": bool(not np.isnan(reference).any()),
            "median_point_distance_px": round(float(np.median(pixels)), 4) if found else None,
            "max_point_distance_px": round(float(pixels.max()), 4) if found else None}


def _mediapipe_face_mesh():
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging, before it is imported
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError:
        raise NotSupportedError(
            f"`lipstream bench landmarks` compares against MediaPipe {MEDIAPIPE_VERSION}, which is not installed "
            f"here (lipstream itself does not need it): pip install mediapipe=={MEDIAPIPE_VERSION} in a separate "
            "virtualenv beside lipstream (it pins protobuf<5, which livekit and pipecat can't use)"
        ) from None
    return face_mesh


def _mediapipe_tracker(mesh) -> Tracker:
    def track(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        faces = mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks or []
        if not faces:
            return np.full((N_LANDMARKS, 2), np.nan, np.float32)
        meshes = [np.array([(p.x * w, p.y * h) for p in f.landmark], np.float32) for f in faces]
        return max(meshes, key=lambda m: float(np.ptp(m[:, 0]) * np.ptp(m[:, 1])))

    return track


def _timed(tracker: Tracker, frames: list[np.ndarray], seconds: float) -> tuple[np.ndarray, float]:
    """Landmarks (T, 478, 2) of the frames, and `seconds` plus the time the tracker took on all
    frames but the first (which pays for MediaPipe's graph start-up)."""
    first = tracker(frames[0])
    start = time.perf_counter()
    track = np.stack([first, *(tracker(f) for f in frames[1:])])
    return track, seconds + time.perf_counter() - start


def _decoded_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def _found(track: np.ndarray) -> np.ndarray:
    return ~np.isnan(track).any(axis=(1, 2))


def _median(values) -> float:
    return round(float(np.median(list(values))), 5)
