"""`prepare`: turn a photo or a video of a person into an avatar package (see package.py).

Everything that depends only on the avatar is computed here once: frames at the target fps,
smoothed landmarks, face and lower-face boxes, soft masks, and for videos the mouth bank.
The package is written to a temporary sibling directory and renamed into place at the end,
so a failure never leaves a half-written package.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lipstream import __version__
from lipstream.avatar.media import LOCAL_LIMITS, MediaLimits, is_image, read_image, resampled_video
from lipstream.avatar.package import MASK_SIZE, SCHEMA_VERSION, file_sha256, is_package, release_row, write_manifest
from lipstream.errors import BadAvatarError
from lipstream.face.landmarks import FaceTracker, face_box
from lipstream.face.mouth import measure_mouth
from lipstream.face.region import lower_face_region
from lipstream.face.smoothing import fill_gaps, smooth_landmarks

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
MIN_VIDEO_S = 1.0
MIN_EYE_DISTANCE_PX = 24
MAX_SIDE_PX = 1280
MAX_FACELESS_SHARE = 0.2

Progress = Callable[[int, int], None]


def prepare(
    source: str | Path,
    out_dir: str | Path,
    fps: float = DEFAULT_FPS,
    name: str | None = None,
    progress: Progress | None = None,
    limits: MediaLimits = LOCAL_LIMITS,
) -> Path:
    """Prepare `source` (photo or video path) into the package directory `out_dir`; returns it.

    Raises BadAvatarError for an unreadable source, no face, a face too small, a video shorter
    than one second, a source over `limits` (checked from its header), or an out_dir that exists
    and is not an avatar package.
    """
    source, out_dir = Path(source), Path(out_dir)
    if not source.is_file():
        raise BadAvatarError(f"{source}: no such file; give a photo or a video of one person")
    if out_dir.exists() and not is_package(out_dir) and any(out_dir.iterdir()):
        raise BadAvatarError(f"{out_dir} exists and is not an avatar package; choose another output directory")
    if not fps > 0:
        raise BadAvatarError(f"fps must be positive, not {fps}")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise BadAvatarError(f"can't write the avatar to {out_dir}: {exc.strerror}") from None
    try:
        _build(source, work, fps, name or out_dir.name, progress, limits)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _build(source: Path, work: Path, fps: float, name: str, progress: Progress | None, limits: MediaLimits) -> None:
    if is_image(source):
        kind, count, frames = "image", 1, iter([read_image(source, limits)])
    else:
        kind = "video"
        count, frames = resampled_video(source, fps, limits)
        if count < MIN_VIDEO_S * fps:
            raise BadAvatarError(
                f"{source} is {count / fps:.2f} s long; a video avatar needs at least {MIN_VIDEO_S:.0f} s "
                "of the person (or give a photo)"
            )
    first = next(frames)
    scale = min(1.0, MAX_SIDE_PX / max(first.shape[:2]))
    height, width = (int(round(d * scale)) // 2 * 2 for d in first.shape[:2])
    frames_out = np.lib.format.open_memmap(work / "frames.npy", "w+", np.uint8, (count, height, width, 3))
    landmarks = np.full((count, 478, 2), np.nan, np.float32)
    with FaceTracker(video=kind == "video") as tracker:
        for k, frame in enumerate(_chain(first, frames)):
            if k >= count:
                break
            frame = _fit(frame, width, height)
            frames_out[k] = frame
            release_row(frames_out, k)
            landmarks[k] = tracker(frame)
            if k == 0 and tracker.faces_in_last_frame > 1:
                log.warning("%s shows %d faces; using the largest", source, tracker.faces_in_last_frame)
            if progress:
                progress(k + 1, count)
    frames_out.flush()
    landmarks = _checked_landmarks(source, landmarks, kind)
    _write_regions(work, landmarks, (height, width))
    manifest = {
        "schema": SCHEMA_VERSION,
        "lipstream": __version__,
        "name": name,
        "kind": kind,
        "source": {"name": source.name, "sha256": file_sha256(source)},
        "fps": float(fps),
        "width": width,
        "height": height,
        "frame_count": count,
        "neutral_mouth_width": _neutral_width(landmarks),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bank_arrays": [],
    }
    if kind == "video":
        from lipstream.avatar.bank import build_bank

        bank = build_bank(np.load(work / "frames.npy", mmap_mode="r"), landmarks)
        (work / "bank").mkdir()
        for key, array in bank.items():
            np.save(work / "bank" / f"{key}.npy", array)
        manifest["bank_arrays"] = sorted(bank)
    write_manifest(work, manifest)


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    import cv2

    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def _checked_landmarks(source: Path, landmarks: np.ndarray, kind: str) -> np.ndarray:
    found = ~np.isnan(landmarks).any(axis=(1, 2))
    if not found.any():
        raise BadAvatarError(f"no face found in {source}; give a clear, frontal photo or video of one person")
    if kind == "video" and 1 - found.mean() > MAX_FACELESS_SHARE:
        raise BadAvatarError(
            f"the face is lost in {100 * (1 - found.mean()):.0f}% of {source}; give a video where the face "
            "stays in view (or trim it)"
        )
    eye = measure_mouth(landmarks[found]).eye_distance
    if float(np.median(eye)) < MIN_EYE_DISTANCE_PX:
        raise BadAvatarError(
            f"the face in {source} is too small ({np.median(eye):.0f} px between the eyes, need "
            f"{MIN_EYE_DISTANCE_PX}); crop closer to the face"
        )
    landmarks = fill_gaps(landmarks, max_gap=len(landmarks))
    return smooth_landmarks(landmarks)


def _write_regions(work: Path, landmarks: np.ndarray, shape: tuple[int, int]) -> None:
    regions = [lower_face_region(lm, shape, MASK_SIZE) for lm in landmarks]
    np.save(work / "landmarks.npy", landmarks.astype(np.float32))
    np.save(work / "face_boxes.npy", np.array([face_box(lm) for lm in landmarks], np.float32))
    np.save(work / "mouth_boxes.npy", np.stack([box for box, _ in regions]).astype(np.int32))
    np.save(work / "mouth_masks.npy", np.stack([mask for _, mask in regions]))


def _neutral_width(landmarks: np.ndarray) -> float:
    """The mouth width (/ eye distance) of the avatar at rest: the median over its frames."""
    return float(np.median(measure_mouth(landmarks).width))

