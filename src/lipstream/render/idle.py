"""Idle motion: the base frame (and its landmarks) for output frame k, before any mouth change.

Video avatars play their own footage looped back and forth (ping-pong), so there is never a
jump at the loop point. Photo avatars show the photo with some life (blinks, a slight head
sway; see `life.Life`) unless `still`; still photos are shown unchanged.
"""

from __future__ import annotations

import numpy as np

from lipstream.avatar.package import AvatarPackage, release_row
from lipstream.render.life import Life


def ping_pong_index(k: int, n: int) -> int:
    """Source frame for output frame k when n frames play forward, then backward, repeatedly."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    i = k % period
    return i if i < n else period - i


class IdleMotion:
    """Base frames of an avatar: `frame(k)` -> (RGB uint8 frame, landmarks (478, 2), source index).

    Renderers that change the mouth take `source(k)` (the untouched source frame), change it in
    the source frame's coordinates, then pass the result through `animate(k, frame)`; the
    landmarks of the result are `move_landmarks(k, landmarks)`.
    """

    def __init__(self, avatar: AvatarPackage, still: bool = False, seed: int = 0):
        self.avatar = avatar
        self.still = still
        self.seed = seed
        self.life: Life | None = None
        if avatar.kind == "image" and not still:
            self.life = Life(avatar.frames.shape[1:], np.asarray(avatar.landmarks[0]), avatar.fps, seed)

    def source_index(self, k: int) -> int:
        return ping_pong_index(k, self.avatar.frame_count)

    def source(self, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The source frame for output frame k, its landmarks (478, 2) px and its index, untouched."""
        i = self.source_index(k)
        frame = np.array(self.avatar.frames[i])  # a copy, so the mapped page can be released
        release_row(self.avatar.frames, i)
        return frame, np.asarray(self.avatar.landmarks[i]), i

    def animate(self, k: int, frame: np.ndarray) -> np.ndarray:
        """A frame in its source frame's coordinates with frame k's life applied (photos only)."""
        return self.life.apply(k, frame) if self.life else frame

    def move_landmarks(self, k: int, landmarks: np.ndarray) -> np.ndarray:
        """Landmarks (N, 2) px moved as `animate` moves the pixels of frame k."""
        return self.life.move_landmarks(k, landmarks) if self.life else landmarks

    def frame(self, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        frame, landmarks, i = self.source(k)
        return self.animate(k, frame), self.move_landmarks(k, landmarks), i
