"""The `phoneme` driver: recognised phones give the mouth's shape, the spectrum gives its size.

pocketsphinx's allphone search (acoustic model and phone language model ship in its wheel)
turns the clip into ARPAbet phones with 10 ms timing. Each phone has a viseme target
(`VISEME_TARGETS`). Phone-loop recognition is noisy, so the phones are trusted for what they
are best at, lip closure (p, b, m), rounding/spreading and teeth, while the jaw follows the
spectral openness of the `viseme` driver, scaled by the phones' vowel openness.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.features import FrameFeatures, pool_to_frames
from lipstream.motion.drivers.base import (
    SILENCE_LOOKAHEAD_MS,
    Driver,
    openness_from_level,
    teeth_from_jaw,
)
from lipstream.motion.drivers.viseme import openness_level
from lipstream.motion.params import JAW_OPEN, LIP_CLOSE, LIP_SPREAD, PARAM_NAMES, TEETH
from lipstream.motion.smoothing import anticipate, coarticulate

# ARPAbet phone (no stress marks) -> (jaw_open, lip_spread, lip_close, teeth). Anything else
# (SIL, +NSN+, +SPN+, ...) is the mouth at rest.
VISEME_TARGETS: dict[str, tuple[float, float, float, float]] = {
    # vowels: openness follows F1 height, spread/rounding follows F2 and lip rounding
    "AA": (1.00, 0.0, 0.0, 0.6), "AE": (0.85, 0.4, 0.0, 0.7), "AH": (0.70, 0.0, 0.0, 0.5),
    "AO": (0.80, -0.5, 0.0, 0.4), "AW": (0.85, -0.3, 0.0, 0.5), "AY": (0.85, 0.2, 0.0, 0.6),
    "EH": (0.65, 0.4, 0.0, 0.6), "ER": (0.45, -0.3, 0.0, 0.4), "EY": (0.55, 0.6, 0.0, 0.6),
    "IH": (0.40, 0.5, 0.0, 0.6), "IY": (0.25, 0.9, 0.0, 0.7), "OW": (0.55, -0.8, 0.0, 0.3),
    "OY": (0.65, -0.5, 0.0, 0.4), "UH": (0.40, -0.6, 0.0, 0.3), "UW": (0.30, -1.0, 0.0, 0.1),
    # bilabials: lips pressed
    "P": (0.0, 0.0, 1.0, 0.0), "B": (0.0, 0.0, 1.0, 0.0), "M": (0.0, 0.0, 1.0, 0.0),
    # labiodentals and dentals: lower lip or tongue at the upper teeth
    "F": (0.10, 0.1, 0.0, 1.0), "V": (0.10, 0.1, 0.0, 1.0),
    "TH": (0.20, 0.2, 0.0, 1.0), "DH": (0.20, 0.2, 0.0, 1.0),
    # alveolars, post-alveolars (rounded), velars, liquids and glides
    "T": (0.20, 0.2, 0.0, 0.7), "D": (0.20, 0.2, 0.0, 0.7), "N": (0.20, 0.2, 0.0, 0.7),
    "S": (0.10, 0.4, 0.0, 1.0), "Z": (0.10, 0.4, 0.0, 1.0),
    "SH": (0.20, -0.5, 0.0, 0.8), "ZH": (0.20, -0.5, 0.0, 0.8),
    "CH": (0.20, -0.5, 0.0, 0.8), "JH": (0.20, -0.5, 0.0, 0.8),
    "K": (0.30, 0.1, 0.0, 0.5), "G": (0.30, 0.1, 0.0, 0.5), "NG": (0.30, 0.1, 0.0, 0.5),
    "L": (0.30, 0.1, 0.0, 0.6), "R": (0.30, -0.5, 0.0, 0.3),
    "W": (0.15, -1.0, 0.0, 0.0), "Y": (0.20, 0.6, 0.0, 0.5), "HH": (0.50, 0.0, 0.0, 0.3),
}
PHONE_RATE_HZ = 100  # pocketsphinx frames
# pocketsphinx mistakes digital silence for anything; noise at -70 dBFS (fixed seed) avoids it.
DITHER_RMS = 3e-4
# Jaw = spectral level * (PHONE_OPEN_FLOOR + phone openness) ** PHONE_OPEN_WEIGHT.
PHONE_OPEN_FLOOR = 0.3
PHONE_OPEN_WEIGHT = 0.5
PHONE_BLEND_MS = 20.0  # Gaussian sigma blending phone targets (closures must stay short)
COARTICULATION_MS = 40.0
LEAD_MS = 20.0  # global constant chosen on the eval clips (docs/drivers.md)
# Streaming allphone decoding revises its last phones for about this long (estimate).
DECODER_SETTLE_MS = 200.0


@dataclass(frozen=True)
class Phone:
    """One recognised phone: ARPAbet label and its time span in seconds."""

    label: str
    start_s: float
    end_s: float


class PhonemeDriver(Driver):
    """pocketsphinx allphone -> ARPAbet viseme targets (close, spread, teeth) x spectral jaw openness."""

    name = "phoneme"
    lookahead_ms = max(SILENCE_LOOKAHEAD_MS, DECODER_SETTLE_MS + LEAD_MS + 2 * COARTICULATION_MS)

    def __init__(self, fps: float):
        super().__init__(fps)
        self._decoder = None

    def mouth_values(self, audio: np.ndarray, speech: np.ndarray, features: FrameFeatures) -> np.ndarray:
        targets = self.phone_targets(audio)
        values = np.zeros((len(features), len(PARAM_NAMES)), np.float32)
        level = openness_level(features.mel) * (PHONE_OPEN_FLOOR + targets[:, JAW_OPEN]) ** PHONE_OPEN_WEIGHT
        values[:, JAW_OPEN] = coarticulate(openness_from_level(level, speech), self.fps, COARTICULATION_MS)
        values[:, LIP_SPREAD] = targets[:, LIP_SPREAD]
        values[:, LIP_CLOSE] = targets[:, LIP_CLOSE]
        values[:, TEETH] = np.maximum(teeth_from_jaw(values[:, JAW_OPEN]), targets[:, TEETH])
        return anticipate(values, self.fps, LEAD_MS)

    def phone_targets(self, audio: np.ndarray) -> np.ndarray:
        """Viseme targets (T, 4) per video frame: phone targets on a 10 ms grid, blended over
        PHONE_BLEND_MS, averaged over each frame's span."""
        n_steps = -(-len(audio) * PHONE_RATE_HZ // SAMPLE_RATE)
        steps = np.zeros((n_steps, len(PARAM_NAMES)), np.float32)
        for phone in self.recognize(audio):
            target = VISEME_TARGETS.get(phone.label)
            if target is not None:
                steps[int(round(phone.start_s * PHONE_RATE_HZ)) : int(round(phone.end_s * PHONE_RATE_HZ))] = target
        steps = coarticulate(steps, PHONE_RATE_HZ, PHONE_BLEND_MS)
        return pool_to_frames(steps, len(audio), self.fps, SAMPLE_RATE // PHONE_RATE_HZ).astype(np.float32)

    def recognize(self, audio: np.ndarray) -> list[Phone]:
        """ARPAbet phones of float32 mono 16 kHz audio, with times in seconds, in order."""
        noise = np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32) * DITHER_RMS
        pcm = (np.clip(audio + noise, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self._allphone_decoder()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return [
            Phone(seg.word, seg.start_frame / PHONE_RATE_HZ, (seg.end_frame + 1) / PHONE_RATE_HZ)
            for seg in decoder.seg()
        ]

    def _allphone_decoder(self):
        if self._decoder is None:
            from pocketsphinx import Decoder, get_model_path

            models = get_model_path()
            self._decoder = Decoder(
                hmm=os.path.join(models, "en-us", "en-us"),
                allphone=os.path.join(models, "en-us", "en-us-phone.lm.bin"),
                lm=None,
                dict=None,
                lw=2.0,
                pip=0.3,
                # Beams 1e-60 / 1e-10 (not 1e-200 / 1e-20) decode 26% faster and give the same
                # viseme targets on 99% of the frames of the eval clips (at least 96% on each).
                beam=1e-60,
                pbeam=1e-10,
                loglevel="ERROR",
            )
        return self._decoder

