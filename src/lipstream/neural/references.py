"""Which real frame the warp head moves: a training frame whose mouth is like the one asked for.

A network that moves a real frame's pixels draws sharp lips and teeth only if that frame shows
a mouth like the one asked for (an open mouth's teeth cannot be moved out of a closed one).
So the reference is chosen per frame, among the avatar's TRAINING frames (never the held-out
last fifth), by the distance of mouth parameters and, when rendering, head pose (numpy only,
used by training and rendering):

- training: for each training frame, one of its REFERENCE_CHOICES nearest training frames at
  least REFERENCE_GAP frames away in time (so the network learns to move a frame from another
  moment, as it must when driven by audio, not to copy its neighbour);
- rendering: among the REFERENCE_CHOICES nearest mouths (the ones training treats as equally
  good), the frame whose head pose is nearest the frame drawn into (the bank's `frame_pose`,
  lipstream.avatar.bank), kept while its mouth stays among them (no switching back and forth
  between nearly equal mouths: no flicker). A reference turned or nodded unlike the frame puts
  its jaw line, lip corners and creases where the frame has none (ghost edges), and one from
  another shot brings texture of another sharpness.
"""

from __future__ import annotations

import numpy as np

REFERENCE_GAP = 12  # frames (0.48 s at 25 fps)
REFERENCE_CHOICES = 4
# Feature weights per parameter (jaw opening, lip spread, lip closure, teeth), lipstream.motion.params order.
_WEIGHTS = np.array([1.0, 0.4, 0.7, 0.3], np.float32)


def mouth_features(params: np.ndarray) -> np.ndarray:
    """Weighted features (N, 4) float32 of mouth parameters (N, 4): squared distance = mouth unlikeness."""
    return np.asarray(params, np.float32).reshape(-1, len(_WEIGHTS)) * _WEIGHTS


def training_references(params: np.ndarray, split: int, gap: int = REFERENCE_GAP,
                        choices: int = REFERENCE_CHOICES) -> np.ndarray:
    """(N, choices) int64: for every frame, the `choices` nearest training frames (0..split-1)
    at least `gap` frames away, nearest first (fewer eligible frames: the nearest repeated)."""
    features = mouth_features(params)
    n = len(features)
    candidates = features[:split]
    distance = ((features[:, None] - candidates[None]) ** 2).sum(-1)
    too_near = np.abs(np.arange(n)[:, None] - np.arange(split)[None]) < gap
    if (~too_near).any(axis=1).all():
        distance[too_near] = np.inf
    order = np.argsort(distance, axis=1, kind="stable")[:, :choices]
    if order.shape[1] < choices:
        order = np.concatenate([order, np.repeat(order[:, :1], choices - order.shape[1], 1)], 1)
    return order.astype(np.int64)


class ReferencePicker:
    """The rendering-time choice among candidate frames (indices (M,), their mouth params (M, 4)
    and head poses (M, P): the bank's `frame_pose` flattened)."""

    def __init__(self, frames: np.ndarray, params: np.ndarray, poses: np.ndarray,
                 choices: int = REFERENCE_CHOICES):
        self.frames = np.asarray(frames, np.int64)
        self.features = mouth_features(params)
        self.poses = np.asarray(poses, np.float32)
        self.choices = choices
        self._held: int | None = None  # position in self.frames

    def pick(self, params: np.ndarray, pose: np.ndarray) -> int:
        """The frame index to move for mouth params (4,) drawn into a frame of head pose (P,):
        the held one while its mouth is among the `choices` nearest, else the one of those
        whose pose is nearest."""
        distance = ((self.features - mouth_features(params)[0]) ** 2).sum(-1)
        k = min(self.choices, len(distance))
        nearest = np.argpartition(distance, k - 1)[:k]  # the k nearest, in no order
        if self._held is None or self._held not in nearest:
            turn = ((self.poses[nearest] - np.asarray(pose, np.float32)) ** 2).sum(-1)
            self._held = int(nearest[int(turn.argmin())])
        return int(self.frames[self._held])
