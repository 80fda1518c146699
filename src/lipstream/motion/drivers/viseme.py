"""The `viseme` driver: mouth shape from the spectrum of each frame, no phone recognition.

- Openness: an open jaw raises the first formant (F1) from ~300 Hz ("ee", "oo", nasals) to
  ~700-900 Hz ("aa"), moving the voice's energy above F1_SPLIT_HZ. The level is the power above
  the split times the ratio above/below it, compressed (power 0.2, i.e. amplitude^0.4).
- Spread vs rounding: spread vowels have a high F2 (energy at 1.8-3.2 kHz), rounded ones a low
  F2 and little energy above 1.2 kHz; their log ratio, standardised over the clip's voiced frames.
- Closure (p, b, m): a sharp dip of the openness level followed within two frames by a burst
  or onset whose energy sits low in the spectrum (t/d/k bursts are high or mid).
- Teeth: with the jaw, and on sibilant/fricative frames (energy above 4 kHz dominates).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d

from lipstream.audio.features import FrameFeatures, band_power, mel_centre_frequencies
from lipstream.motion.drivers.base import (
    SILENCE_LOOKAHEAD_MS,
    Driver,
    openness_from_level,
    teeth_from_jaw,
)
from lipstream.motion.params import JAW_OPEN, LIP_CLOSE, LIP_SPREAD, PARAM_NAMES, TEETH
from lipstream.motion.smoothing import anticipate, coarticulate

F1_SPLIT_HZ = 550.0
OPEN_BAND_TOP_HZ = 4300.0
LOW_BAND_BOTTOM_HZ = 90.0
OPENNESS_COMPRESSION = 0.2  # exponent on power
SPREAD_BAND_HZ = (1800.0, 3200.0)
ROUND_BAND_HZ = (200.0, 1200.0)
SPREAD_SCALE = 0.7  # lip_spread at one standard deviation of the clip's spread ratio
FRICATION_HZ = 4000.0
FRICATION_SHARE = (0.2, 0.6)  # share of power above FRICATION_HZ for no teeth .. full teeth
# Mouths start moving before the sound; look this far ahead. Global constant, chosen on the
# eval clips (docs/drivers.md).
LEAD_MS = 20.0
COARTICULATION_MS = 40.0  # Gaussian sigma, also chosen on the eval clips
CLOSURE_WINDOW_MS = 100.0
CLOSURE_DIP = 0.35  # level below this share of the local peak counts as a closure
CLOSURE_BURST_RISE = 2.0  # the level must grow this much within the next two frames
CLOSURE_MAX_CENTROID_HZ = 2500.0  # a p/b burst or vowel onset after m is low in the spectrum
_EPS = 1e-10


class VisemeDriver(Driver):
    """Spectral mouth shape: F1-band openness, F2-based spread/rounding, p/b/m closures, teeth."""

    name = "viseme"
    lookahead_ms = max(SILENCE_LOOKAHEAD_MS, LEAD_MS + 2 * COARTICULATION_MS)

    def mouth_values(self, audio: np.ndarray, speech: np.ndarray, features: FrameFeatures) -> np.ndarray:
        values = np.zeros((len(features), len(PARAM_NAMES)), np.float32)
        level = openness_level(features.mel)
        values[:, JAW_OPEN] = openness_from_level(level, speech)
        values[:, LIP_SPREAD] = _spread(features, speech)
        values[:, LIP_CLOSE] = _closure(level, features.mel, self.fps)
        values[:, TEETH] = np.maximum(teeth_from_jaw(values[:, JAW_OPEN]), _frication(features.mel))
        values = coarticulate(values, self.fps, COARTICULATION_MS)
        return anticipate(values, self.fps, LEAD_MS)


def openness_level(log_mel: np.ndarray) -> np.ndarray:
    """Openness evidence (T,) from log-mel (T, 40): (P_high * P_high / P_low) ** 0.2, split at F1_SPLIT_HZ."""
    high = band_power(log_mel, F1_SPLIT_HZ, OPEN_BAND_TOP_HZ) + _EPS
    low = band_power(log_mel, LOW_BAND_BOTTOM_HZ, F1_SPLIT_HZ) + _EPS
    return ((high * high / low) ** OPENNESS_COMPRESSION).astype(np.float32)


def _spread(feats: FrameFeatures, speech: np.ndarray) -> np.ndarray:
    """lip_spread (T,) in [-1, 1]: standardised log(F2-band / low-band power) on voiced speech, 0 elsewhere."""
    ratio = np.log(band_power(feats.mel, *SPREAD_BAND_HZ) + _EPS) - np.log(
        band_power(feats.mel, *ROUND_BAND_HZ) + _EPS
    )
    voiced = speech & (feats.pitch_hz > 0)
    if voiced.sum() < 2:
        return np.zeros(len(ratio), np.float32)
    z = (ratio - np.median(ratio[voiced])) / (np.std(ratio[voiced]) + _EPS)
    return np.where(voiced, np.tanh(SPREAD_SCALE * z), 0.0).astype(np.float32)


def _closure(level: np.ndarray, log_mel: np.ndarray, fps: float) -> np.ndarray:
    """lip_close (T,) in {0, 1}: a deep dip in openness followed by a low-spectrum burst/onset."""
    window = max(1, int(round(2 * CLOSURE_WINDOW_MS * fps / 1000.0)) + 1)
    local_peak = maximum_filter1d(level, window, mode="nearest")
    ahead = np.maximum(np.roll(level, -1), np.roll(level, -2))
    ahead[-2:] = 0.0
    centroid = _centroid_hz(log_mel)
    burst_centroid = np.minimum(np.roll(centroid, -1), np.roll(centroid, -2))
    closed = (
        (level < CLOSURE_DIP * local_peak)
        & (ahead > CLOSURE_BURST_RISE * level)
        & (burst_centroid < CLOSURE_MAX_CENTROID_HZ)
    )
    return closed.astype(np.float32)


def _frication(log_mel: np.ndarray) -> np.ndarray:
    """Teeth (T,) in [0, 1] from the share of power above FRICATION_HZ (s, z, f, th, sh)."""
    total = band_power(log_mel, 0.0, np.inf) + _EPS
    share = band_power(log_mel, FRICATION_HZ, np.inf) / total
    low, high = FRICATION_SHARE
    return np.clip((share - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _centroid_hz(log_mel: np.ndarray) -> np.ndarray:
    """Spectral centroid (T,) in Hz of log-mel frames (T, 40)."""
    power = np.exp(np.asarray(log_mel, np.float64))
    return (power @ mel_centre_frequencies() / (power.sum(axis=1) + _EPS)).astype(np.float32)
