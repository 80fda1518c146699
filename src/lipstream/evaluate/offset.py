"""A/V offset from lip and audio signals: correlation against candidate offsets, and its peak.

Sign convention (SyncNet's): offset > 0 means the audio leads (plays early), offset < 0 that
it lags (plays late). At a candidate offset o, the lips at time t are compared with the audio
at t - o; the score is the Pearson correlation of each signal pair over the frames, averaged
over the pairs. The audio is indexed circularly, so every candidate sees the same number of
frames and no candidate wins by seeing fewer. The offset is the peak of the score curve
(smoothed over 20 ms), refined between grid points by a parabola; the confidence is the peak
minus the curve's median, SyncNet's "median minus minimum" for a similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lipstream.evaluate.signals import AUDIO_RATE_HZ

SEARCH_MS = 600.0  # +- range searched, SyncNet's 15 frames at 25 fps
STEP_MS = 10.0
CURVE_SMOOTH_MS = 20.0


@dataclass
class OffsetEstimate:
    """Best offset over a span of frames, and the score curve it came from.

    offset_ms: + = audio early; confidence: peak minus median of the curve (correlation units);
    peak_score: mean correlation at the peak; offsets_ms, scores: (L,) the curve.
    """

    offset_ms: float
    confidence: float
    peak_score: float
    offsets_ms: np.ndarray
    scores: np.ndarray


def candidate_offsets(search_ms: float = SEARCH_MS, step_ms: float = STEP_MS) -> np.ndarray:
    """Candidate offsets in ms, (L,) float64, -search..+search."""
    n = int(round(search_ms / step_ms))
    return np.arange(-n, n + 1) * step_ms


def score_curves(
    lip: np.ndarray,
    times_s: np.ndarray,
    audio: np.ndarray,
    offsets_ms: np.ndarray,
    spans: list[tuple[int, int]],
) -> np.ndarray:
    """Scores (S, L): for each span [i0, i1) of frames and each offset, the mean over signal
    pairs of the correlation between lips and offset audio.

    lip: (P, N) per frame, NaN where no face; times_s: (N,) frame times; audio: (P, M) on the
    10 ms grid. Frames without a face are left out; a span with < 3 faces scores NaN.
    """
    valid = np.isfinite(lip).all(axis=0)
    out = np.zeros((len(spans), len(offsets_ms)))
    for pair_lip, pair_audio in zip(lip, audio, strict=True):
        shifted = _audio_at(pair_audio, times_s, offsets_ms)  # (L, N)
        for s, (i0, i1) in enumerate(spans):
            keep = np.flatnonzero(valid[i0:i1]) + i0
            out[s] += _pearson(pair_lip[keep], shifted[:, keep]) if len(keep) >= 3 else np.nan
    return out / len(lip)


def peak(offsets_ms: np.ndarray, scores: np.ndarray) -> OffsetEstimate:
    """The offset where the smoothed curve peaks (sub-step by a parabola through 3 points)."""
    step = float(offsets_ms[1] - offsets_ms[0])
    smooth = gaussian_filter1d(scores, CURVE_SMOOTH_MS / step, mode="nearest")
    i = int(np.argmax(smooth))
    shift = 0.0
    if 0 < i < len(smooth) - 1:
        a, b, c = smooth[i - 1], smooth[i], smooth[i + 1]
        denom = a - 2 * b + c
        shift = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5)) if denom < 0 else 0.0
    return OffsetEstimate(
        offset_ms=float(offsets_ms[i] + shift * step),
        confidence=float(smooth[i] - np.median(smooth)),
        peak_score=float(smooth[i]),
        offsets_ms=offsets_ms,
        scores=smooth,
    )


def _pearson(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Correlation (L,) of x (n,) with each row of ys (L, n); 0 where either is constant."""
    x = x - x.mean()
    ys = ys - ys.mean(axis=1, keepdims=True)
    norm = np.sqrt((x @ x) * np.einsum("ln,ln->l", ys, ys))
    return np.where(norm > 1e-12, ys @ x / np.maximum(norm, 1e-12), 0.0)


def _audio_at(audio: np.ndarray, times_s: np.ndarray, offsets_ms: np.ndarray) -> np.ndarray:
    """An audio signal (M,) on the 10 ms grid read at times t - o for every offset o and frame
    time t: (L, N), linearly interpolated, wrapping around the ends."""
    m = len(audio)
    pos = np.mod((times_s[None, :] - offsets_ms[:, None] / 1000.0) * AUDIO_RATE_HZ, m)
    i0 = np.floor(pos).astype(np.int64) % m
    frac = pos - np.floor(pos)
    return audio[i0] * (1 - frac) + audio[(i0 + 1) % m] * frac
