"""The bench's reassembly of a plugin's output into an mp4 (lipstream.integrations.bench)."""

from __future__ import annotations

import av
import numpy as np

from lipstream.integrations.bench import write_timed_mp4


def test_each_image_fills_the_frames_it_is_on_screen_for(tmp_path):
    fps, rate = 25, 24000
    levels = [40 * k for k in range(6)]
    # the images after the first sent 1 ms after their ticks (a paced sender's jitter): each is
    # still shown in its own frame, not one frame late
    video = [(k / fps + 0.001 * (k > 0), np.full((32, 32, 3), level, np.uint8)) for k, level in enumerate(levels)]
    audio = [(0.0, np.zeros(rate // 4, np.int16))]
    path = write_timed_mp4(tmp_path / "out.mp4", video, audio, rate, fps)
    with av.open(str(path)) as clip:
        shown = [float(f.to_ndarray(format="rgb24").mean()) for f in clip.decode(video=0)]
    assert len(shown) >= 5
    assert np.allclose(shown[:5], levels[:5], atol=4)
