"""Per-video-frame audio features on synthetic tones and noise."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.fft import dct

from lipstream.audio import SAMPLE_RATE, FrameClock
from lipstream.audio.features import (
    FEATURE_REACH_SAMPLES,
    N_MELS,
    FeatureStream,
    N_MFCC,
    frame_features,
    log_mel_spectrogram,
    mel_centre_frequencies,
)


def tone(freq_hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def voiced(f0_hz: float, seconds: float) -> np.ndarray:
    """A buzz with harmonics falling at 6 dB/octave, like a vowel's source."""
    return sum(tone(f0_hz * h, seconds, 0.3 / h) for h in range(1, 8)).astype(np.float32)


@pytest.mark.parametrize("fps", [25.0, 29.97, 30.0, 60.0, 150.0])
@pytest.mark.parametrize("n_samples", [1, 639, 640, 12_345])
def test_one_row_per_video_frame(fps, n_samples):
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, n_samples).astype(np.float32)
    f = frame_features(audio, fps)
    n_frames = FrameClock(fps).frame_count(n_samples)
    assert len(f) == n_frames
    assert f.rms.shape == f.log_energy.shape == f.pitch_hz.shape == (n_frames,)
    assert f.mel.shape == (n_frames, N_MELS) and f.mfcc.shape == (n_frames, N_MFCC)
    for a in (f.rms, f.log_energy, f.mel, f.mfcc, f.pitch_hz):
        assert a.dtype == np.float32 and np.isfinite(a).all()


def test_empty_audio_gives_no_frames():
    f = frame_features(np.zeros(0, np.float32), 25.0)
    assert len(f) == 0 and f.mel.shape == (0, N_MELS)


def test_energy_rises_exactly_where_a_tone_starts():
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), tone(440, 1.0)])
    f = frame_features(audio, 25.0)
    assert np.all(f.log_energy[:25] == -100.0) and np.all(f.rms[:25] == 0)
    expected_rms = 0.3 / np.sqrt(2)
    assert np.allclose(f.rms[25:], expected_rms, rtol=0.01)
    assert np.allclose(f.log_energy[25:], 20 * np.log10(expected_rms), atol=0.1)


def test_mel_peak_follows_the_tone_frequency():
    centres = mel_centre_frequencies()
    for freq in (300.0, 1000.0, 3000.0):
        f = frame_features(tone(freq, 0.5), 25.0)
        peak_band = np.bincount(f.mel[2:-2].argmax(axis=1)).argmax()
        assert abs(np.log2(centres[peak_band] / freq)) < 0.15


def test_mfcc_is_the_dct_of_log_mel():
    f = frame_features(voiced(120, 0.5), 25.0)
    expected = dct(f.mel.astype(np.float64), type=2, norm="ortho", axis=1)[:, :N_MFCC]
    assert np.allclose(f.mfcc, expected, atol=1e-3)


@pytest.mark.parametrize("f0", [90.0, 150.0, 240.0])
def test_pitch_of_a_voiced_buzz(f0):
    pitch = frame_features(voiced(f0, 1.0), 25.0).pitch_hz[2:-2]
    assert np.all(np.abs(pitch / f0 - 1) < 0.03)


def test_noise_and_silence_are_unvoiced():
    noise = np.random.default_rng(1).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)
    assert (frame_features(noise, 25.0).pitch_hz > 0).mean() < 0.1
    assert np.all(frame_features(np.zeros(SAMPLE_RATE, np.float32), 25.0).pitch_hz == 0)


def test_log_mel_spectrogram_runs_at_100_frames_per_second():
    assert log_mel_spectrogram(np.zeros(16_001, np.float32)).shape == (101, N_MELS)
    assert log_mel_spectrogram(np.zeros(16_000, np.float32), hop_s=0.02).shape == (50, N_MELS)


def test_a_minute_of_audio_is_fast():
    audio = np.random.default_rng(2).normal(0, 0.1, 60 * SAMPLE_RATE).astype(np.float32)
    start = time.perf_counter()
    frame_features(audio, 25.0)
    assert time.perf_counter() - start < 3.0  # ~0.2 s on the 2-core dev machine; loose for CI


def test_a_feature_stream_computes_each_frame_once_and_equals_the_whole_clip(speech):
    """Windows of a growing stream (1 s back from its newest sample, 20 ms more each time) give
    the features of the whole clip on every frame whose reach is in, recomputing only new frames."""
    fps, clock = 25.0, FrameClock(25.0)
    whole = frame_features(speech, fps)
    stream, computed = FeatureStream(fps), []
    real = frame_features

    def counting(audio, fps):
        computed.append(clock.frame_count(len(audio)))
        return real(audio, fps)

    import lipstream.audio.features as features_module

    features_module.frame_features = counting
    try:
        for end in range(320, len(speech), 320):
            first = max(0, clock.frame_count(end) - 25)
            window = stream.window(speech[clock.frame_start(first) : end], first)
            settled = [k for k in range(len(window)) if clock.frame_start(first + k + 1) + FEATURE_REACH_SAMPLES <= end]
            for name in ("rms", "mel", "mfcc", "pitch_hz"):
                np.testing.assert_allclose(getattr(window, name)[settled], getattr(whole, name)[first:][settled],
                                           rtol=1e-4, atol=1e-4, err_msg=name)
    finally:
        features_module.frame_features = real
    assert max(computed[5:]) <= 6  # new frames, the unsettled last one and a margin: not the 25-frame window
