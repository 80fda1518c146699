"""Temporal smoothing of landmark jitter.

Offline (whole clips): a zero-phase Savitzky-Golay filter, which removes frame-to-frame jitter
of a pixel or two without delaying or flattening real lip motion. Gaps (NaN frames) shorter
than `max_gap` frames are filled by linear interpolation first.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter


def fill_gaps(landmarks: np.ndarray, max_gap: int = 12) -> np.ndarray:
    """Interpolate NaN frames of a (T, N, 2) landmark track across gaps of at most max_gap frames."""
    track = np.array(landmarks, np.float32, copy=True)
    missing = np.isnan(track).any(axis=(1, 2))
    if not missing.any() or missing.all():
        return track
    known = np.flatnonzero(~missing)
    flat = track.reshape(len(track), -1)
    for start, end in _runs(missing):
        short = end - start <= max_gap
        inside = start > 0 and end < len(track)
        if short and inside:
            t = np.arange(start, end)
            for j in range(flat.shape[1]):
                flat[start:end, j] = np.interp(t, known, flat[known, j])
        elif short:  # at the clip's ends: hold the nearest known frame
            flat[start:end] = flat[known[0] if start == 0 else known[-1]]
    return track


def smooth_landmarks(landmarks: np.ndarray, window: int = 5) -> np.ndarray:
    """Zero-phase smoothing of a (T, N, 2) landmark track; frames with NaN stay NaN."""
    track = np.asarray(landmarks, np.float32)
    if len(track) < window:
        return track.copy()
    out = track.copy()
    valid = ~np.isnan(track).any(axis=(1, 2))
    for start, end in _runs(valid):
        if end - start >= window:
            out[start:end] = savgol_filter(track[start:end], window, 2, axis=0)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D bool array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))
