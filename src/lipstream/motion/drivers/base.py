"""The driver interface: a whole clip of speech in, a `MouthTrack` (one row per video frame) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from lipstream.audio.clock import FrameClock
from lipstream.audio.features import FrameFeatures, frame_features
from lipstream.audio.vad import MASK_LOOKAHEAD_MS, speech_mask
from lipstream.motion.params import MouthTrack
from lipstream.motion.smoothing import CLOSE_RAMP_MS, close_in_silence

# Level percentiles (over a clip's speech frames) that map to a barely open and a typically
# wide-open jaw; levels beyond them clip to 0 and saturate at 1.
QUIET_PERCENTILE = 5.0
PEAK_PERCENTILE = 95.0
TYPICAL_PEAK_JAW_OPEN = 0.8
# Look-ahead every driver has because `drive` closes the mouth in silence: the closing ramp
# looks CLOSE_RAMP_MS ahead at a speech mask that itself looks MASK_LOOKAHEAD_MS ahead.
SILENCE_LOOKAHEAD_MS = CLOSE_RAMP_MS + MASK_LOOKAHEAD_MS
# Teeth show as the jaw opens, the same rule `params_from_measures` uses for real faces.
TEETH_PER_JAW_OPEN = 2.0


class Driver(ABC):
    """Turns speech audio into mouth parameters at a video frame rate.

    Subclasses set `name`, `lookahead_ms` (how much audio after a frame's own span the driver
    needs to decide that frame, at least SILENCE_LOOKAHEAD_MS; what a streaming preset must
    buffer) and implement `mouth_values`. `drive` then closes the mouth wherever the VAD hears
    no speech. Offline, levels are scaled over the whole clip given to `drive`.
    """

    name: ClassVar[str]
    lookahead_ms: ClassVar[float]

    def __init__(self, fps: float):
        if not fps > 0:
            raise ValueError(f"fps must be positive, not {fps}")
        self.fps = float(fps)

    def drive(self, audio: np.ndarray, speech: np.ndarray | None = None,
              features: FrameFeatures | None = None) -> MouthTrack:
        """Mouth track for float32 mono 16 kHz audio (n,): T = FrameClock(fps).frame_count(n) rows.

        speech / features: the (T,) speech mask and the `frame_features` of these frames when the
        caller has them (a live stream keeps both from run to run); computed from `audio` if None.
        """
        audio = np.asarray(audio, np.float32).reshape(-1)
        n_frames = FrameClock(self.fps).frame_count(len(audio))
        if n_frames == 0:
            return MouthTrack.closed(0, self.fps)
        mask = speech_mask(audio, self.fps) if speech is None else np.asarray(speech, bool)
        if not mask.any():
            return MouthTrack.closed(n_frames, self.fps)
        values = self.mouth_values(audio, mask, frame_features(audio, self.fps) if features is None else features)
        return MouthTrack(close_in_silence(values, mask, self.fps), self.fps)

    @abstractmethod
    def mouth_values(self, audio: np.ndarray, speech: np.ndarray, features: FrameFeatures) -> np.ndarray:
        """(T, 4) float32 parameters in PARAM_NAMES order, before silences are closed.

        audio: float32 mono 16 kHz (n,); speech: (T,) bool speech mask and features: the
        `frame_features` of the same frames.
        """


def openness_from_level(level: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Map a loudness-like track (T,) to jaw_open in [0, 1], linearly within a clip's range.

    Over the speech frames, the QUIET_PERCENTILE level maps to 0 and the PEAK_PERCENTILE level to
    TYPICAL_PEAK_JAW_OPEN; values outside clip. Offline drivers see the whole clip, so the range
    is the clip's own.
    """
    level = np.asarray(level, np.float32)
    if not speech.any():
        return np.zeros_like(level)
    quiet, peak = np.percentile(level[speech], [QUIET_PERCENTILE, PEAK_PERCENTILE])
    if peak <= quiet:
        return np.zeros_like(level)
    return np.clip((level - quiet) * (TYPICAL_PEAK_JAW_OPEN / (peak - quiet)), 0.0, 1.0)


def teeth_from_jaw(jaw_open: np.ndarray) -> np.ndarray:
    """Upper-teeth visibility (T,) implied by jaw opening alone."""
    return np.clip(np.asarray(jaw_open, np.float32) * TEETH_PER_JAW_OPEN, 0.0, 1.0)
