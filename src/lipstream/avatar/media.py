"""Reading avatar sources: one photo, or a video resampled to a constant frame rate.

Frames come out as uint8 H x W x 3 RGB. Video timing uses the container's timestamps, so
variable-frame-rate input is resampled correctly: output frame k (time k/fps) shows the source
frame whose presentation interval contains that time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from lipstream.errors import BadAvatarError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    """The photo at `path` as RGB uint8 (alpha dropped, grey expanded)."""
    data = np.fromfile(path, np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise BadAvatarError(f"{path} could not be read as an image (PNG, JPEG, BMP, WebP or TIFF)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def video_frame_times(path: Path) -> tuple[np.ndarray, float]:
    """Presentation times (s, sorted, from the stream start) of every video frame, and the duration."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadAvatarError(f"{path} has no video stream; give a photo or a video of the person")
            stream = container.streams.video[0]
            base = stream.time_base
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
    except av.FFmpegError as exc:
        raise BadAvatarError(f"{path} could not be read as a video ({exc})") from exc
    if not pts:
        raise BadAvatarError(f"{path} contains no video frames")
    times = (np.array(pts, np.float64) - pts[0]) * float(base)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1 / 25
    return times, float(times[-1] + step)


def resampled_video(path: Path, fps: float) -> tuple[int, Iterator[np.ndarray]]:
    """(frame count, iterator of RGB frames) of the video at a constant `fps`."""
    times, duration = video_frame_times(path)
    count = int(np.floor(duration * fps + 1e-6))
    # For each output frame: the index of the last source frame starting at or before its time.
    source_index = np.searchsorted(times, np.arange(count) / fps + 1e-6, side="right") - 1
    return count, _pick_frames(path, np.clip(source_index, 0, len(times) - 1))


def _pick_frames(path: Path, source_index: np.ndarray) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = (f for p in container.demux(stream) for f in _safe_decode(p))
        wanted = 0
        for i, frame in enumerate(decoded):  # decoders emit frames in presentation order
            if wanted >= len(source_index):
                return
            if source_index[wanted] > i:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            while wanted < len(source_index) and source_index[wanted] == i:
                yield rgb
                wanted += 1


def _safe_decode(packet: av.Packet) -> list[av.VideoFrame]:
    try:
        return packet.decode()
    except av.InvalidDataError:
        return []
