"""Shaping mouth-parameter tracks in time: envelopes, coarticulation, anticipation, silence.

Tracks are float arrays with time on axis 0, one row per video frame: (T,) for one
parameter or (T, 4) for whole `MouthTrack.values` rows. Durations are in milliseconds.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter1d

from lipstream.motion.params import clip_params

CLOSE_RAMP_MS = 70.0  # how long the mouth takes to close after speech (and to open before it)


def envelope_follower(x: np.ndarray, fps: float, attack_ms: float, release_ms: float) -> np.ndarray:
    """Causal one-pole follower of x (T,): time constant attack_ms while rising, release_ms while falling."""
    x = np.asarray(x, np.float64)
    rise = _one_pole_step(attack_ms, fps)
    fall = _one_pole_step(release_ms, fps)
    out = np.empty_like(x)
    level = x[0] if len(x) else 0.0
    for k, value in enumerate(x):
        level += (rise if value > level else fall) * (value - level)
        out[k] = level
    return out.astype(np.float32)


def coarticulate(values: np.ndarray, fps: float, sigma_ms: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along time (axis 0) with standard deviation sigma_ms.

    Neighbouring targets blend the way articulators do; the kernel reaches about 2 sigma_ms into
    the future, which counts towards a driver's look-ahead.
    """
    values = np.asarray(values, np.float32)
    sigma = sigma_ms * fps / 1000.0
    if sigma <= 0 or len(values) == 0:
        return values
    return gaussian_filter1d(values, sigma, axis=0, mode="nearest").astype(np.float32)


def anticipate(values: np.ndarray, fps: float, lead_ms: float) -> np.ndarray:
    """Shift a track lead_ms earlier (frame k shows what was at k + lead), holding the last value.

    Real mouths start to move before the sound they shape; offline drivers can look ahead to
    match. Fractional frames are linearly interpolated.
    """
    values = np.asarray(values, np.float32)
    if lead_ms == 0 or len(values) == 0:
        return values
    source = np.clip(np.arange(len(values)) + lead_ms * fps / 1000.0, 0, len(values) - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, len(values) - 1)
    w = (source - lo).reshape((-1,) + (1,) * (values.ndim - 1)).astype(np.float32)
    return (values[lo] * (1 - w) + values[hi] * w).astype(np.float32)


def silence_gain(speech_mask: np.ndarray, fps: float, ramp_ms: float = CLOSE_RAMP_MS) -> np.ndarray:
    """Per-frame gain (T,) float32: 1 in speech, falling to 0 within ramp_ms of silence.

    The raised-cosine ramp lies inside the silence on both sides: the mouth closes after
    speech ends and is already opening when the next speech starts.
    """
    mask = np.asarray(speech_mask, bool)
    if not mask.any():
        return np.zeros(len(mask), np.float32)
    distance_ms = distance_transform_edt(~mask) * 1000.0 / fps  # 0 in speech frames
    ramp = np.clip(distance_ms / max(ramp_ms, 1e-9), 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * ramp))).astype(np.float32)


def close_in_silence(
    track_values: np.ndarray, speech_mask: np.ndarray, fps: float, ramp_ms: float = CLOSE_RAMP_MS
) -> np.ndarray:
    """Bring (T, 4) mouth parameters smoothly to rest (all zero: lips together, relaxed) in silence.

    Every parameter is scaled by `silence_gain`, so frames further than ramp_ms from speech
    are exactly at rest and the transitions are smooth. Returns a new clipped (T, 4) array.
    """
    gain = silence_gain(speech_mask, fps, ramp_ms)[:, None]
    return clip_params(np.asarray(track_values, np.float32) * gain)


def _one_pole_step(time_constant_ms: float, fps: float) -> float:
    if time_constant_ms <= 0:
        return 1.0
    return float(1.0 - np.exp(-1000.0 / (fps * time_constant_ms)))
