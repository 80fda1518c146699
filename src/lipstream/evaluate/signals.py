"""Paired articulatory signals: what the lips do, and what the audio says they should be doing.

Three pairs, each a lip measure and the acoustic correlate phonetics gives it:

- openness: log inner-lip aperture plus a lip-closure indicator  <->  F1 openness,
  log(P(550-4300 Hz)^2 / P(90-550 Hz)): an open jaw raises F1 and moves voice energy up,
  closed lips (p, b, m) leave silence or a low nasal murmur;
- spreading: mouth width  <->  log(P(1800-3200 Hz) / P(200-1200 Hz)): spread lips raise F2,
  rounded lips lower it;
- opening speed: d/dt log aperture  <->  d/dt F1 openness: releases and closures, the
  sharpest timing events.

Nothing is fitted: fitting a model per clip on 4-10 s of speech gave noisier lags than these
fixed pairings (docs/eval.md). Lip signals come per tracked frame (any timing, VFR included);
audio signals on a 10 ms grid.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lipstream.audio.features import band_power, log_mel_spectrogram
from lipstream.evaluate.video import LipTrack

PAIR_NAMES: tuple[str, ...] = ("openness", "spreading", "opening speed")
AUDIO_RATE_HZ = 100  # log_mel_spectrogram's default hop: row i is centred on i * 10 ms
AUDIO_SMOOTH_MS = 20.0  # Gaussian sigma: the spectral detail lips can't follow
# Band powers are floored at this fraction of their median, so digital silence (padding, a
# late-starting track) is as quiet as a room, not an outlier.
BAND_FLOOR = 1e-3
# Lips count as closed below this fraction of the way from the 5th to 95th aperture percentile.
CLOSED_FRACTION = 0.15
APERTURE_LOG_OFFSET = 0.02  # of the 95th percentile: log(aperture + offset) stays finite


def lip_signals(lips: LipTrack) -> np.ndarray:
    """(3, N) float64 lip signals in PAIR_NAMES order, each standardised, NaN where no face."""
    face = lips.has_face
    aperture = lips.aperture.astype(np.float64)
    low, high = np.percentile(aperture[face], [5, 95])
    log_aperture = np.log(aperture + APERTURE_LOG_OFFSET * max(high, 1e-6))
    closed = np.where(face, (aperture < low + CLOSED_FRACTION * (high - low)).astype(np.float64), np.nan)
    openness = _standardise(log_aperture) - _standardise(closed)
    speed = np.gradient(log_aperture, lips.times_s) if len(aperture) > 1 else np.zeros_like(aperture)
    return np.stack([_standardise(openness), _standardise(lips.width.astype(np.float64)), _standardise(speed)])


def audio_signals(audio: np.ndarray) -> np.ndarray:
    """(3, M) float64 audio signals in PAIR_NAMES order, standardised, on a 10 ms grid.

    `audio` is float32 mono 16 kHz, shape (n,); M = ceil(n / 160), row i centred on i * 10 ms.
    """
    log_mel = log_mel_spectrogram(audio)

    def log_band(lo_hz: float, hi_hz: float) -> np.ndarray:
        power = band_power(log_mel, lo_hz, hi_hz).astype(np.float64)
        return np.log(power + BAND_FLOOR * max(float(np.median(power)), 1e-12))

    sigma = AUDIO_SMOOTH_MS * AUDIO_RATE_HZ / 1000.0
    openness = gaussian_filter1d(2 * log_band(550, 4300) - log_band(90, 550), sigma)
    spreading = gaussian_filter1d(log_band(1800, 3200) - log_band(200, 1200), sigma)
    speed = np.gradient(openness) * AUDIO_RATE_HZ if len(openness) > 1 else np.zeros_like(openness)
    return np.stack([_standardise(openness), _standardise(spreading), _standardise(speed)])


def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the finite values; NaN stays NaN; constant -> zeros."""
    finite = np.isfinite(x)
    if not finite.any():
        return x
    centred = x - x[finite].mean()
    std = centred[finite].std()
    return centred / std if std > 1e-12 else np.where(finite, 0.0, np.nan)
