"""The input audio comes back out of a render as it went in: own rate, own channels, same samples."""

import av
import numpy as np
import pytest
from scipy.io import wavfile

from lipstream.audio.io import read_audio
from lipstream.avatar.resolve import bundled_asset
from lipstream.offline import RenderOptions, render_file

RATE = 48_000
AAC_FRAME = 1024


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory):
    """4 s of 48 kHz stereo: the bundled speech on the left, a quieter, delayed copy on the right."""
    speech, rate = read_audio(bundled_asset("speech.wav"))
    mono = np.interp(np.arange(4 * RATE) * rate / RATE, np.arange(len(speech)), speech[:, 0] / 32768.0)
    stereo = np.stack([mono, 0.5 * np.roll(mono, 480)], axis=1)
    path = tmp_path_factory.mktemp("audio") / "stereo48k.wav"
    wavfile.write(path, RATE, np.round(stereo * 32767).astype(np.int16))
    return path


def _decoded(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels, codec = stream.rate, stream.channels, stream.codec_context.name
        resampler = av.AudioResampler(format="flt", layout=stream.layout.name, rate=rate)
        parts = [f.to_ndarray().reshape(-1, channels) for frame in container.decode(stream)
                 for f in resampler.resample(frame)]
    return np.concatenate(parts), rate, channels, codec


def test_a_48k_stereo_wav_comes_back_48k_stereo_in_the_mp4(default_avatar, stereo_wav, tmp_path):
    out = tmp_path / "out.mp4"
    summary = render_file(default_avatar, stereo_wav, out, RenderOptions(size=(128, 128), driver="energy"))
    assert (summary.sample_rate, summary.channels) == (RATE, 2)
    decoded, rate, channels, codec = _decoded(out)
    source, _ = read_audio(stereo_wav)
    source = source / 32768.0
    assert (rate, channels, codec) == (RATE, 2, "aac")
    assert abs(len(decoded) - len(source)) <= AAC_FRAME
    n = min(len(decoded), len(source))
    for c in range(2):
        r = np.corrcoef(decoded[:n, c], source[:n, c])[0, 1]
        assert r > 0.999, (c, r)


@pytest.mark.parametrize("name,codec,expected", [("out.mov", "pcm", "pcm_s16le"), ("out.mkv", "flac", "flac"),
                                                  ("out.mkv", "copy", "pcm_s16le")])
def test_pcm_flac_and_copy_are_bit_exact(default_avatar, stereo_wav, tmp_path, name, codec, expected):
    out = tmp_path / name
    render_file(default_avatar, stereo_wav, out, RenderOptions(size=(128, 128), driver="energy", audio_codec=codec))
    decoded, rate, channels, got = _decoded(out)
    source, _ = read_audio(stereo_wav)
    assert (rate, channels, got) == (RATE, 2, expected)
    assert np.array_equal(np.round(decoded * 32768).astype(np.int32), source.astype(np.int32))
