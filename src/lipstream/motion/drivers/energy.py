"""The `energy` driver: jaw opening follows loudness; nothing else moves."""

from __future__ import annotations

import numpy as np

from lipstream.audio.features import FrameFeatures
from lipstream.motion.drivers.base import (
    SILENCE_LOOKAHEAD_MS,
    Driver,
    openness_from_level,
    teeth_from_jaw,
)
from lipstream.motion.params import JAW_OPEN, PARAM_NAMES, TEETH
from lipstream.motion.smoothing import anticipate, envelope_follower

ATTACK_MS = 20.0
RELEASE_MS = 60.0
LEAD_MS = 40.0  # mouths open before the sound: show each frame's loudness this much earlier


class EnergyDriver(Driver):
    """Loudness-driven jaw: per-frame RMS through an attack/release follower, shifted earlier."""

    name = "energy"
    lookahead_ms = max(SILENCE_LOOKAHEAD_MS, LEAD_MS)

    def mouth_values(self, audio: np.ndarray, speech: np.ndarray, features: FrameFeatures) -> np.ndarray:
        rms = features.rms
        level = anticipate(envelope_follower(rms, self.fps, ATTACK_MS, RELEASE_MS), self.fps, LEAD_MS)
        values = np.zeros((len(rms), len(PARAM_NAMES)), np.float32)
        values[:, JAW_OPEN] = openness_from_level(level, speech)
        values[:, TEETH] = teeth_from_jaw(values[:, JAW_OPEN])
        return values
