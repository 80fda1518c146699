"""Drivers on espeak-ng speech: silence closes the mouth, loudness opens it, p/b/m close the lips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import espeak

from lipstream.audio import SAMPLE_RATE, FrameClock, load_audio
from lipstream.audio.features import frame_features
from lipstream.audio.vad import speech_mask
from lipstream.errors import NotSupportedError
from lipstream.motion.drivers import DEFAULT_DRIVER, DRIVER_NAMES, Driver, get_driver
from lipstream.motion.params import PARAM_NAMES
from lipstream.motion.smoothing import anticipate, close_in_silence, envelope_follower, silence_gain

FPS = 25.0


def _trimmed(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def say(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drivers")
    spoken: dict[str, np.ndarray] = {}

    def speak(text: str) -> np.ndarray:
        if text not in spoken:
            spoken[text] = _trimmed(load_audio(espeak(text, folder / f"{len(spoken)}.wav")))
        return spoken[text]

    return speak


@pytest.fixture(scope="module")
def with_pauses(say) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Two phrases around and between pauses of 300 and 500 ms; returns audio and the pauses."""
    first, second = say("hello world, this is a test"), say("of the lip sync engine")
    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32), first,
             np.zeros(int(0.3 * SAMPLE_RATE), np.float32), second,
             np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    ends = np.cumsum([len(p) for p in parts])
    pauses = [(0, ends[0]), (ends[1], ends[2]), (ends[3], ends[4])]
    return np.concatenate(parts), pauses


@pytest.fixture(scope="module")
def tracks(with_pauses):
    audio, _ = with_pauses
    return {name: get_driver(name, FPS).drive(audio) for name in DRIVER_NAMES}


def test_registry():
    assert set(DRIVER_NAMES) == {"energy", "viseme", "phoneme"}
    assert DEFAULT_DRIVER in DRIVER_NAMES
    for name in DRIVER_NAMES:
        driver = get_driver(name, FPS)
        assert isinstance(driver, Driver) and driver.name == name
        assert driver.lookahead_ms >= 0 and type(driver).__doc__.strip()


def test_unknown_driver_names_the_choices():
    with pytest.raises(NotSupportedError) as excinfo:
        get_driver("wav2lip", FPS)
    assert all(name in str(excinfo.value) for name in DRIVER_NAMES)


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_one_row_per_frame_in_range(name, tracks, with_pauses):
    audio, _ = with_pauses
    track = tracks[name]
    assert track.values.shape == (FrameClock(FPS).frame_count(len(audio)), len(PARAM_NAMES))
    assert track.fps == FPS
    assert 0 <= track.jaw_open.min() and track.jaw_open.max() <= 1
    assert -1 <= track.lip_spread.min() and track.lip_spread.max() <= 1
    assert track.jaw_open.max() > 0.5


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_mouth_closed_in_pauses_of_300ms_and_more(name, tracks, with_pauses):
    _, pauses = with_pauses
    track = tracks[name]
    opening = track.jaw_open * (1 - track.lip_close)
    centres = (np.arange(len(track)) + 0.5) * SAMPLE_RATE / FPS
    margin = 0.12 * SAMPLE_RATE  # VAD padding + closing ramp
    for start, end in pauses:
        inside = (centres > start + margin) & (centres < end - margin)
        assert inside.any()
        assert np.all(opening[inside] < 0.01), f"{name} moves during the pause {start}-{end}"
        assert not track.values[inside].any(axis=1).all(), "the mouth never comes fully to rest"


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_jaw_follows_loudness_on_speech(name, tracks, with_pauses):
    audio, _ = with_pauses
    speech = speech_mask(audio, FPS)
    rms = frame_features(audio, FPS).rms
    r = np.corrcoef(tracks[name].jaw_open[speech], rms[speech])[0, 1]
    assert r > 0.3


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_silence_and_empty_audio(name):
    driver = get_driver(name, FPS)
    silent = driver.drive(np.zeros(SAMPLE_RATE, np.float32))
    assert len(silent) == 25 and not silent.values.any()
    assert len(driver.drive(np.zeros(0, np.float32))) == 0


def test_phoneme_driver_presses_lips_for_p_b_m_and_opens_for_aa(say):
    driver = get_driver("phoneme", FPS)
    bilabial = driver.drive(say("papa bob made my map"))
    assert (bilabial.lip_close > 0.5).sum() >= 2
    open_vowel = driver.drive(say("aah"))
    assert open_vowel.lip_close.max() < 0.1
    assert open_vowel.jaw_open.max() > 0.5
    assert open_vowel.effective_aperture().max() > bilabial.effective_aperture().mean() * 1.5


def test_close_in_silence_ramps_smoothly():
    mask = np.zeros(20, bool)
    mask[5:10] = True
    gain = silence_gain(mask, fps=25.0, ramp_ms=80.0)
    assert np.all(gain[5:10] == 1) and np.all(gain[:3] == 0) and np.all(gain[12:] == 0)
    assert 0 < gain[4] < 1 and 0 < gain[10] < 1 and gain[4] == gain[10]
    values = np.full((20, 4), 0.7, np.float32)
    closed = close_in_silence(values, mask, fps=25.0)
    assert np.all(closed[:3] == 0) and np.allclose(closed[5:10], 0.7)


def test_envelope_attacks_faster_than_it_releases():
    step = np.r_[np.zeros(5), np.ones(10), np.zeros(10)]
    env = envelope_follower(step, fps=25.0, attack_ms=10.0, release_ms=200.0)
    assert env[6] > 0.9 and env[16] > 0.6


def test_anticipate_shifts_earlier():
    x = np.r_[np.zeros(10), np.ones(10)].astype(np.float32)
    assert np.argmax(anticipate(x, fps=25.0, lead_ms=80.0) > 0.5) == 8


def test_accuracy_lag_is_positive_when_the_prediction_is_late():
    from lipstream.bench.drivers import lagged_correlation

    mouth = np.random.default_rng(4).normal(size=200).astype(np.float32)
    late = np.r_[np.zeros(3), mouth[:-3]].astype(np.float32)  # the same curve, 3 frames (120 ms) late
    result = lagged_correlation(late, mouth, np.ones(200, bool), fps=25.0)
    assert result["best_lag_ms"] == 120.0 and result["best_r"] > 0.99 and result["r_lag0"] < 0.3


@pytest.mark.parametrize("preset", ["ultra_low", "low"])
def test_live_presets_close_the_mouth_in_pauses_on_their_short_lookahead(preset, with_pauses):
    from lipstream.bench.drivers import _live_track, open_in_long_silence
    from lipstream.session.presets import get_preset

    audio, pauses = with_pauses
    p = get_preset(preset)
    assert p.lookahead_ms <= (60 if preset == "ultra_low" else 120)
    track = _live_track(get_driver(p.driver, FPS), audio, FPS, p)
    assert len(track) == FrameClock(FPS).frame_count(len(audio))
    counted = open_in_long_silence(track.effective_aperture(), speech_mask(audio, FPS), FPS)
    assert counted["long_silence_frames"] >= 15 and counted["open_in_long_silence"] == 0
    # and the live track still follows the offline one on speech
    offline = get_driver(p.driver, FPS).drive(audio).effective_aperture()
    assert np.corrcoef(track.effective_aperture(), offline)[0, 1] > 0.7


def test_open_in_long_silence_counts_open_frames_past_the_ramps():
    from lipstream.bench.drivers import open_in_long_silence

    speech = np.array([1] * 5 + [0] * 10 + [1] * 3 + [0] * 4 + [1] * 2, bool)  # silences of 400 and 160 ms
    aperture = np.zeros(len(speech), np.float32)
    aperture[5:7] = 0.5  # inside the 70 ms closing ramp (2 frames at 25 fps): not counted
    aperture[9] = 0.2  # open mid-silence: counted
    aperture[19] = 0.9  # in the short silence: not counted
    assert open_in_long_silence(aperture, speech, 25.0) == {"long_silence_frames": 6, "open_in_long_silence": 1}


def test_the_pauses_clip_puts_long_silences_between_phrases_and_live_low_keeps_them_closed():
    from lipstream.bench.drivers import PAUSES_S, _live_track, open_in_long_silence, pauses_clip
    from lipstream.session.presets import get_preset

    audio = pauses_clip()
    speech = speech_mask(audio, FPS)
    change = np.diff(np.r_[0, (~speech).astype(np.int8), 0])
    silences_ms = (np.flatnonzero(change == -1) - np.flatnonzero(change == 1)) * 1000 / FPS
    assert (silences_ms >= 300).sum() >= 5
    assert np.array_equal(audio, pauses_clip())  # the same clip every run
    p = get_preset("low")
    track = _live_track(get_driver(p.driver, FPS), audio, FPS, p)
    counted = open_in_long_silence(track.effective_aperture(), speech, FPS)
    assert counted["long_silence_frames"] >= 40 and counted["open_in_long_silence"] <= 0.02 * counted["long_silence_frames"]
