"""Voice activity on espeak-ng speech separated by digital silence and by quiet noise."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import espeak

from lipstream.audio import SAMPLE_RATE, load_audio
from lipstream.audio import vad
from lipstream.audio.vad import CHUNK_SAMPLES, StreamingVad, speech_mask, speech_probability, speech_segments


def _trimmed(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def phrases(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("vad")
    first = load_audio(espeak("the quick brown fox jumps over the lazy dog", folder / "a.wav"))
    second = load_audio(espeak("hello world, this is a test", folder / "b.wav"))
    return _trimmed(first), _trimmed(second)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def _noise(seconds: float, rms: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0, rms, int(seconds * SAMPLE_RATE)).astype(np.float32)


def test_probability_per_32ms_chunk(phrases):
    audio = phrases[0]
    prob = speech_probability(audio)
    assert prob.shape == (-(-len(audio) // CHUNK_SAMPLES),) and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1 and prob.mean() > 0.6


def test_finds_each_phrase_and_nothing_in_the_gaps(phrases):
    first, second = phrases
    gap = 1.0
    audio = np.concatenate([_silence(gap), first, _silence(gap), second, _silence(gap)])
    truth = [(gap, gap + len(first) / SAMPLE_RATE)]
    truth.append((truth[0][1] + gap, truth[0][1] + gap + len(second) / SAMPLE_RATE))
    found = [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in speech_segments(audio)]
    assert len(found) == 2
    for (start, end), (true_start, true_end) in zip(found, truth):
        assert abs(start - true_start) < 0.1 and abs(end - true_end) < 0.2

    mask = speech_mask(audio, 25.0)
    centres = (np.arange(len(mask)) + 0.5) / 25.0
    in_speech = np.zeros(len(mask), bool)
    near = np.zeros(len(mask), bool)
    for start, end in truth:
        in_speech |= (centres > start + 0.1) & (centres < end - 0.1)
        near |= (centres > start - 0.25) & (centres < end + 0.25)
    assert mask[in_speech].mean() > 0.95
    assert not mask[~near].any()


def test_quiet_noise_and_silence_are_not_speech():
    assert not speech_mask(_silence(2.0), 25.0).any()
    assert not speech_mask(_noise(2.0, 0.001), 25.0).any()


def test_short_gaps_stay_speech_and_long_ones_split(phrases):
    first, second = phrases
    bridged = np.concatenate([first, _silence(0.08), second])
    assert len(speech_segments(bridged)) == 1
    split = np.concatenate([first, _silence(0.6), second])
    assert len(speech_segments(split)) == 2


def test_smoothing_drops_blips_bridges_short_gaps_and_pads(monkeypatch):
    chunk_ms = CHUNK_SAMPLES / SAMPLE_RATE * 1000
    prob = np.zeros(100, np.float32)
    prob[10:12] = 0.9  # 64 ms blip: dropped
    prob[30:50] = 0.9  # speech ...
    prob[50:54] = 0.4  # ... dipping only to 0.4 (hysteresis keeps it) ...
    prob[54:58] = 0.1  # ... then a 128 ms gap: bridged
    prob[58:70] = 0.9
    prob[80:95] = 0.9  # after a 320 ms gap: a separate segment
    monkeypatch.setattr(vad, "speech_probability", lambda audio: prob)
    audio = np.zeros(100 * CHUNK_SAMPLES, np.float32)
    segments = speech_segments(audio, pad_ms=30)
    pad = int(30 * SAMPLE_RATE / 1000)
    assert segments == [
        (30 * CHUNK_SAMPLES - pad, 70 * CHUNK_SAMPLES + pad),
        (80 * CHUNK_SAMPLES - pad, 95 * CHUNK_SAMPLES + pad),
    ]
    assert chunk_ms * 4 < vad.MIN_SILENCE_MS < chunk_ms * 10


def test_a_streaming_vad_scores_each_chunk_once_and_masks_as_the_whole_clip(phrases, monkeypatch):
    """Pushed in uneven pieces, with its history cut 1 s before each window: the same mask as
    `speech_mask` of everything pushed so far, and silero run once per 32 ms chunk (plus one
    look at the incomplete last chunk per mask)."""
    audio = np.concatenate([_silence(0.3), phrases[0], _silence(0.6), phrases[1], _silence(0.4)])
    calls = [0]
    step = vad._silero_step

    def counting(*args):
        calls[0] += 1
        return step(*args)

    monkeypatch.setattr(vad, "_silero_step", counting)
    stream, masks, pushed, rng = StreamingVad(), 0, 0, np.random.default_rng(3)
    while pushed < len(audio):
        piece = audio[pushed : pushed + int(rng.integers(100, 3000))]
        stream.push(piece)
        pushed += len(piece)
        start = max(0, pushed - 2 * SAMPLE_RATE) // 640 * 640
        got = stream.mask(start, pushed - start, 25.0)
        masks += 1
        monkeypatch.setattr(vad, "_silero_step", step)
        whole = speech_mask(audio[:pushed], 25.0)
        monkeypatch.setattr(vad, "_silero_step", counting)
        np.testing.assert_array_equal(got, whole[start // 640 : start // 640 + len(got)])
        stream.forget_before(start - SAMPLE_RATE)
    assert calls[0] <= len(audio) // CHUNK_SAMPLES + masks
