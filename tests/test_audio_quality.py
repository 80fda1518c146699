"""Incoming audio's quality figures: level, clipping, SNR, and a declared rate its spectrum belies."""

import numpy as np
import pytest
from scipy.signal import resample_poly

from lipstream.audio.quality import AudioQuality


def assessed(samples: np.ndarray, rate: int) -> dict:
    quality = AudioQuality()
    step = rate // 50  # 20 ms chunks, as a live client sends them
    for i in range(0, len(samples), step):
        quality.add(samples[i : i + step].reshape(-1, 1) if samples.ndim == 1 else samples[i : i + step], rate)
    return quality.snapshot()


def test_nothing_to_say_before_audio():
    assert set(AudioQuality().snapshot().values()) == {None}


def test_level_snr_and_clipping(speech):
    clean = assessed((speech * 32767).astype(np.int16), 16000)
    assert -25 < clean["levelDbfs"] < -12 and clean["clippedShare"] == 0 and not clean["rateMismatch"]
    noisy = assessed(speech + np.random.default_rng(0).normal(0, 0.03, len(speech)).astype(np.float32), 16000)
    assert clean["snrDb"] > 40 and 3 < noisy["snrDb"] < clean["snrDb"] - 20
    loud = assessed(np.clip(speech * 20, -1, 1), 16000)
    assert loud["clippedShare"] > 0.05 and loud["levelDbfs"] > clean["levelDbfs"] + 10


def test_stereo_is_assessed_on_its_mix(speech):
    stereo = np.stack([speech, speech], axis=1)
    assert assessed(stereo, 16000)["levelDbfs"] == pytest.approx(assessed(speech, 16000)["levelDbfs"], abs=0.1)


@pytest.mark.parametrize("made_at, declared", [(16000, 48000), (16000, 24000), (8000, 48000)])
def test_a_declared_rate_above_the_recordings_own_is_found(speech, made_at, declared):
    audio = speech if made_at == 16000 else resample_poly(speech, 1, 2)
    up = resample_poly(audio, declared // 1000, made_at // 1000).astype(np.float32)
    result = assessed(up, declared)
    assert result["rateMismatch"] and result["likelyRateHz"] == made_at and result["sampleRate"] == declared


def test_a_full_band_recording_is_not_a_mismatch():
    noise = np.random.default_rng(1).normal(0, 0.05, 3 * 48000).astype(np.float32)
    assert assessed(noise, 48000)["rateMismatch"] is False
