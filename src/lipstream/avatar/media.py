"""Reading avatar sources: one photo, or a video resampled to a constant frame rate.

Frames come out as uint8 H x W x 3 RGB. Video timing uses the container's timestamps, so
variable-frame-rate input is resampled correctly: output frame k (time k/fps) shows the source
frame whose presentation interval contains that time.

Sizes and lengths are checked from the headers before anything is decoded (`MediaLimits`): a
389 KB PNG can claim 20000 x 20000 pixels (1.2 GB decoded) and a 2 KB video three hours.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from lipstream.errors import BadAvatarError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS = 25_000_000  # a 24 MP camera's photo (6000 x 4000) passes; decoded RGB: 75 MB
DEFAULT_MAX_VIDEO_S = 120.0
MAX_SOURCE_FPS = 240  # frames per second of video a source may hold (packets counted while demuxing)


@dataclass(frozen=True)
class MediaLimits:
    """What an avatar source may be: pixels per picture (photo or video frame), video seconds."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_video_s: float = DEFAULT_MAX_VIDEO_S


# What `prepare` accepts from a local user (the CLI, the API): any length of video, since
# footage is the bank's material; the pixel bound stays (a decompression bomb is a mistake anywhere).
# The server passes its own, tighter limits (serve --max-video-s).
LOCAL_LIMITS = MediaLimits(max_video_s=float("inf"))


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path, limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """The photo at `path` as RGB uint8 (alpha dropped, grey expanded); its size is checked
    from the header first."""
    _check_image_header(path, limits)
    data = np.fromfile(path, np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise BadAvatarError(f"{path} could not be read as an image (PNG, JPEG, BMP, WebP or TIFF)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def video_frame_times(path: Path, limits: MediaLimits = MediaLimits()) -> tuple[np.ndarray, float]:
    """Presentation times (s, sorted, from the stream start) of every video frame, and the duration
    (the last frame's time plus its own duration). The header's size and duration are checked
    before reading, the packets' times while reading (no frame is decoded here)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadAvatarError(f"{path.name} has no video stream; give a photo or a video of the person")
            stream = container.streams.video[0]
            _check_pixels(path, stream.codec_context.width, stream.codec_context.height, limits)
            if container.duration is not None:
                _check_duration(path, container.duration / av.time_base, limits)
            base = float(stream.time_base)
            packets: list[tuple[int, int]] = []  # (pts, duration) in time-base ticks
            first = None
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                packets.append((packet.pts, packet.duration or 0))
                first = packet.pts if first is None else min(first, packet.pts)
                _check_duration(path, (packet.pts - first) * base, limits)
                if len(packets) > limits.max_video_s * MAX_SOURCE_FPS:
                    raise BadAvatarError(f"{path.name} has over {len(packets) - 1} frames; a video avatar may have "
                                         f"at most {limits.max_video_s:g} s at {MAX_SOURCE_FPS} fps")
    except av.FFmpegError as exc:
        raise BadAvatarError(f"{path.name} could not be read as a video ({exc})") from exc
    if not packets:
        raise BadAvatarError(f"{path.name} contains no video frames")
    packets.sort()
    times = (np.array([pts for pts, _ in packets], np.float64) - packets[0][0]) * base
    # The last frame lasts as long as its packet says; if it doesn't say, as long as a typical frame.
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1 / 25
    duration = float(times[-1] + (packets[-1][1] * base or step))
    _check_duration(path, duration, limits)
    return times, duration


def resampled_video(path: Path, fps: float, limits: MediaLimits = MediaLimits()) -> tuple[int, Iterator[np.ndarray]]:
    """(frame count, iterator of RGB frames) of the video at a constant `fps`."""
    times, duration = video_frame_times(path, limits)
    count = int(np.floor(duration * fps + 1e-6))
    # For each output frame: the index of the last source frame starting at or before its time.
    source_index = np.searchsorted(times, np.arange(count) / fps + 1e-6, side="right") - 1
    return count, _pick_frames(path, np.clip(source_index, 0, len(times) - 1))


def _check_image_header(path: Path, limits: MediaLimits) -> None:
    """Check the picture's size from its header (Pillow reads no pixel to know it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own ceiling (179 MP), far above ours
        width = height = None
    except (OSError, ValueError, SyntaxError):
        raise BadAvatarError(f"{path.name} could not be read as an image (PNG, JPEG, BMP, WebP or TIFF)") from None
    if width is None:
        raise BadAvatarError(f"{path.name} is over {Image.MAX_IMAGE_PIXELS * 2:,} pixels; the limit is "
                             f"{limits.max_pixels:,} pixels (scale it down: avatars are used at 1280 px at most)")
    _check_pixels(path, width, height, limits)


def _check_pixels(path: Path, width: int, height: int, limits: MediaLimits) -> None:
    if width * height > limits.max_pixels:
        raise BadAvatarError(f"{path.name} is {width} x {height} pixels; the limit is {limits.max_pixels:,} pixels "
                             "(scale it down: avatars are used at 1280 px at most)")


def _check_duration(path: Path, seconds: float, limits: MediaLimits) -> None:
    if seconds > limits.max_video_s:
        raise BadAvatarError(f"{path.name} is {seconds:.0f} s long; a video avatar may be at most "
                             f"{limits.max_video_s:g} s: cut a short clip of the person")


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
