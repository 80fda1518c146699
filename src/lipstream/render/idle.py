"""Idle motion: the base frame (and its landmarks) for output frame k, before any mouth change.

Video avatars play their own footage looped back and forth (ping-pong), so there is never a
jump at the loop point. Photo avatars show the photo.
"""

from __future__ import annotations

import numpy as np

from lipstream.avatar.package import AvatarPackage


def ping_pong_index(k: int, n: int) -> int:
    """Source frame for output frame k when n frames play forward, then backward, repeatedly."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    i = k % period
    return i if i < n else period - i


class IdleMotion:
    """Base frames of an avatar: `frame(k)` -> (RGB uint8 frame, landmarks (478, 2), source index)."""

    def __init__(self, avatar: AvatarPackage, still: bool = False, seed: int = 0):
        self.avatar = avatar
        self.still = still
        self.seed = seed

    def source_index(self, k: int) -> int:
        return ping_pong_index(k, self.avatar.frame_count)

    def frame(self, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        i = self.source_index(k)
        return np.asarray(self.avatar.frames[i]), np.asarray(self.avatar.landmarks[i]), i
