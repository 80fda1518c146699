"""The Python API: open, render (path, file object, array, PCM16 bytes, a stream), info, sessions."""

import inspect
import io

import numpy as np
import pytest

import lipstream
from lipstream.audio.clock import SAMPLE_RATE
from lipstream.errors import BadAudioError
from lipstream.session import ManualClock


@pytest.fixture(scope="module")
def avatar(default_avatar):
    with lipstream.open(default_avatar.path, size=(64, None), driver="energy", still=True) as opened:
        yield opened


def test_the_public_names():
    assert set(lipstream.__all__) >= {"open", "Avatar", "Frame", "RenderInfo", "Session", "LipstreamError",
                                      "BadAudioError", "BadAvatarError", "BadVideoError", "NotSupportedError",
                                      "RenderFailedError"}
    for name in lipstream.__all__:
        assert getattr(lipstream, name) is not None
    assert issubclass(lipstream.BadVideoError, lipstream.LipstreamError)
    params = inspect.signature(lipstream.open).parameters
    assert list(params) == ["avatar", "renderer", "driver", "fps", "size", "still"]
    assert all(p.kind is p.KEYWORD_ONLY for name, p in params.items() if name != "avatar")


def test_every_kind_of_audio_gives_the_same_frames(avatar, speech_path, speech):
    clip = np.round(speech[: 2 * SAMPLE_RATE] * 32767).astype(np.int16)
    from_array, info = avatar.render(clip, sample_rate=SAMPLE_RATE)
    assert (info.renderer, info.driver, info.fps, info.size) == ("warp", "energy", 25.0, (64, 64))
    assert (info.frames, info.duration_s, info.sample_rate, info.channels) == (50, 2.0, SAMPLE_RATE, 1)
    a = list(from_array)
    b = list(avatar.render(clip.tobytes(), sample_rate=SAMPLE_RATE)[0])  # bytes: raw PCM16
    assert len(a) == len(b) == 50
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.audio, y.audio) for x, y in zip(a, b))
    whole, info = avatar.render(io.BytesIO(speech_path.read_bytes()))  # an encoded file: a file object
    assert info.frames == len(list(whole))
    with pytest.raises(BadAudioError, match="sample_rate"):
        avatar.render(clip.tobytes())
    with pytest.raises(BadAudioError, match="sample_rate"):
        avatar.render(iter([clip]))
    with pytest.raises(BadAudioError, match="type int"):
        avatar.render(42)


def test_closing_the_frames_stops_the_work(avatar, speech):
    chunks = (np.round(speech[i : i + 1600] * 32767).astype(np.int16) for i in range(0, 10 * SAMPLE_RATE, 1600))
    frames, info = avatar.render(chunks, sample_rate=SAMPLE_RATE)
    assert info.frames is None and info.duration_s is None  # a stream: not known in advance
    first = [next(frames) for _ in range(5)]
    frames.close()
    assert [f.index for f in first] == list(range(5))
    assert next(chunks, None) is not None  # the rest of the stream was never read


def test_a_session_from_the_avatar(avatar, speech):
    clock = ManualClock()
    with avatar.session(clock=clock, preset="ultra_low", idle_frames=False) as session:
        session.push_audio(np.round(speech[:SAMPLE_RATE] * 32767).astype(np.int16), SAMPLE_RATE)
        session.flush()
        made = [f for f in session.poll() if isinstance(f, lipstream.Frame)]
    assert len(made) == 25 and made[0].image.shape == (64, 64, 3)
