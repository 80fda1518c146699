"""The one place that decides a session's frame rate and frame size, and resizes frames."""

from __future__ import annotations

import cv2
import numpy as np

from lipstream.avatar.package import AvatarPackage
from lipstream.errors import NotSupportedError
from lipstream.sinks.mp4 import fps_fraction

MIN_SIDE_PX = 32
MAX_SIDE_PX = 2048
MAX_UPSCALE = 2.0
ASPECT_TOLERANCE = 0.02


def output_fps(avatar: AvatarPackage, fps: float | None) -> float:
    """The output frame rate: a photo takes any; a video avatar plays at the rate it was prepared at."""
    if fps is not None and not 1 <= fps <= 120:
        raise NotSupportedError(f"fps {fps:g} is out of range; give 1 to 120")
    if fps is None or avatar.kind == "image":
        return float(fps_fraction(fps or avatar.fps))
    if abs(fps - avatar.fps) > 1e-6:
        raise NotSupportedError(
            f"avatar {avatar.name} was prepared at {avatar.fps:g} fps; prepare its video again with --fps {fps:g}"
        )
    return fps


def output_size(avatar_size: tuple[int, int], width: int | None, height: int | None, even: bool) -> tuple[int, int]:
    """(width, height) of the frames: the avatar's, or scaled keeping its aspect ratio; `even`
    rounds both up to even numbers (H.264)."""
    aw, ah = avatar_size
    if width is None and height is None:
        width, height = aw, ah
    elif height is None:
        height = round(width * ah / aw)
    elif width is None:
        width = round(height * aw / ah)
    elif abs(width / height - aw / ah) > ASPECT_TOLERANCE * aw / ah:
        raise NotSupportedError(f"size {width}x{height} changes the avatar's aspect ratio ({aw}x{ah}); "
                                "give only width or height, or a size with the same shape")
    if even:
        width, height = width + width % 2, height + height % 2
    for side, limit in ((width, aw), (height, ah)):
        if not MIN_SIDE_PX <= side <= min(MAX_SIDE_PX, MAX_UPSCALE * limit):
            raise NotSupportedError(f"size {width}x{height} is out of range: {MIN_SIDE_PX} px to "
                                    f"{MAX_UPSCALE:g}x the avatar's {aw}x{ah}")
    return int(width), int(height)


def fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (H, W, 3) uint8 RGB frame resized to size (width, height), area-averaged when shrinking."""
    if (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    shrink = size[0] < frame.shape[1]
    return cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
