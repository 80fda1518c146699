from fractions import Fraction

import av
import numpy as np
import pytest

from lipstream.audio import SAMPLE_RATE, FrameClock, load_audio
from lipstream.errors import NotSupportedError, RenderFailedError
from lipstream.sinks.mp4 import Mp4Writer, fps_fraction


@pytest.mark.parametrize("fps", [25, 30, 29.97])
def test_frame_k_is_shown_with_its_audio(tmp_path, fps):
    """A white frame at k and a beep starting at k/fps land at the same time in the file."""
    k = 20
    n_frames = 40
    audio = np.zeros(int(n_frames / fps * SAMPLE_RATE), np.float32)
    start = int(round(k / fps * SAMPLE_RATE))
    audio[start : start + 400] = 0.5
    out = tmp_path / "t.mp4"
    clock = FrameClock(fps)
    with Mp4Writer(out, fps, (32, 32), SAMPLE_RATE) as writer:
        for i in range(n_frames):
            start, end = clock.frame_span(i)
            writer.write(np.full((32, 32, 3), 255 if i == k else 0, np.uint8), audio[start:end, None])
    with av.open(str(out)) as c:
        shown = [float(f.pts * f.time_base) for f in c.decode(video=0) if f.to_ndarray(format="rgb24").mean() > 128]
    beep = np.flatnonzero(np.abs(load_audio(out)) > 0.25)[0] / SAMPLE_RATE
    assert len(shown) == 1 and abs(shown[0] - k / fps) < 1e-3
    assert abs(beep - k / fps) < 1e-3


def test_failed_render_leaves_nothing(tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, 25, (32, 32), SAMPLE_RATE) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8), np.zeros((640, 1), np.float32))
            raise RuntimeError("renderer crashed")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_targets(tmp_path):
    with pytest.raises(RenderFailedError, match="does not exist"):
        Mp4Writer(tmp_path / "no" / "o.mp4", 25, (32, 32))
    with pytest.raises(RenderFailedError, match="directory"):
        Mp4Writer(tmp_path, 25, (32, 32))
    with pytest.raises(NotSupportedError, match=".mov or .mkv"):
        Mp4Writer(tmp_path / "o.mp4", 25, (32, 32), 48000, 2, audio_codec="pcm")
    with pytest.raises(NotSupportedError, match="ending in"):
        Mp4Writer(tmp_path / "o.avi", 25, (32, 32))
    assert list(tmp_path.iterdir()) == []


def test_fps_fractions():
    assert fps_fraction(25) == 25
    assert fps_fraction(29.97) == Fraction(30000, 1001)
    assert fps_fraction(23.976) * 1001 == 24000
