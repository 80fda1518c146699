import io
from fractions import Fraction

import av
import numpy as np
import pytest

from lipstream.audio import SAMPLE_RATE, FrameClock, load_audio
from lipstream.audio.io import MAX_DURATION_S, read_audio
from lipstream.errors import BadAudioError


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return np.repeat(mono[None], channels, axis=0)


def _encode(path, codec: str, rate: int, channels: int = 2, fmt: str | None = None, seconds: float = 1.0):
    """Write a 300 Hz tone with PyAV in the given codec/container."""
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        samples = _tone(rate, seconds, channels)
        fmt_name = stream.codec_context.codec.audio_formats[0].name
        block = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], block):
            chunk = samples[:, start : start + block]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            if fmt_name != "fltp":
                frame = av.AudioResampler(format=fmt_name, layout=layout, rate=rate).resample(frame)[0]
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    "name,codec,rate,fmt",
    [
        ("a.wav", "pcm_s16le", 44100, None),
        ("a.flac", "flac", 48000, None),
        ("a.mp3", "libmp3lame", 44100, None),
        ("a.m4a", "aac", 48000, "mp4"),
        ("a.ogg", "libopus", 48000, "ogg"),
    ],
)
def test_common_formats_decode_to_16k_mono(tmp_path, name, codec, rate, fmt):
    samples = load_audio(_encode(tmp_path / name, codec, rate, fmt=fmt))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - 1.0) < 0.08  # encoder padding only
    spectrum = np.abs(np.fft.rfft(samples[2000:14000]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 12000 - 300) < 3  # the tone survived resampling


def test_audio_track_of_a_video(tmp_path):
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width = video.height = 64
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
        for k in range(25):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        tone = _tone(44100, 1.0)
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 44100, start, Fraction(1, 44100)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
        out.mux(video.encode(None))
    samples = load_audio(path)
    assert abs(len(samples) / SAMPLE_RATE - 1.0) < 0.08
    assert np.abs(samples).max() > 0.3


def test_arrays_bytes_and_file_objects(tmp_path):
    stereo_int16 = (_tone(8000, 0.5, 2).T * 32767).astype(np.int16)
    samples = load_audio(stereo_int16, sample_rate=8000)
    assert len(samples) == 8000 and samples.dtype == np.float32
    wav = _encode(tmp_path / "b.wav", "pcm_s16le", 16000)
    # an encoded file is a path or a file object; bytes are raw PCM16 and need their rate
    assert np.allclose(load_audio(io.BytesIO(wav.read_bytes())), load_audio(wav), atol=1e-6)
    mono = np.round(load_audio(wav) * 32767).astype("<i2")
    assert np.allclose(load_audio(mono.tobytes(), sample_rate=16000), mono / 32768.0, atol=1e-6)
    with pytest.raises(BadAudioError, match="sample_rate"):
        load_audio(wav.read_bytes())
    with pytest.raises(BadAudioError, match="whole number"):
        read_audio(b"\x00\x01\x02", sample_rate=16000)


def test_read_audio_keeps_rate_channels_and_16_bit_samples(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(3)
    pcm = rng.integers(-20000, 20000, (4410, 2)).astype(np.int16)
    wavfile.write(tmp_path / "s.wav", 44100, pcm)
    samples, rate = read_audio(tmp_path / "s.wav")
    assert rate == 44100 and samples.dtype == np.int16 and np.array_equal(samples, pcm)
    flac, rate = read_audio(_encode(tmp_path / "t.flac", "flac", 22050, channels=2))
    assert rate == 22050 and flac.shape[1] == 2


def test_bad_audio_is_explained(tmp_path):
    with pytest.raises(BadAudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(BadAudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.mp3").write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(BadAudioError, match="decoded|no audio"):
        load_audio(tmp_path / "junk.mp3")
    with pytest.raises(BadAudioError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(BadAudioError, match="limit"):
        load_audio(np.zeros(MAX_DURATION_S * 8000 + 8000, np.int16), sample_rate=8000)


def test_clock_covers_every_sample_once():
    for fps in (24, 25, 29.97, 30, 60):
        clock = FrameClock(fps)
        n = clock.frame_count(SAMPLE_RATE * 7 + 123)
        spans = [clock.frame_span(k) for k in range(n)]
        assert spans[0][0] == 0
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert spans[-1][1] >= SAMPLE_RATE * 7 + 123 > spans[-1][0]
    assert FrameClock(25).frame_span(25) == (16000, 16640)
