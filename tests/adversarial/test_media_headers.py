"""Unit: sizes and lengths checked from headers before decoding (the files of hostile_media)."""

from __future__ import annotations

import time

import pytest

from lipstream.bench.hostile_media import long_claim_video, png_bomb, silent_flac, video_at_times
from lipstream.audio.io import load_audio
from lipstream.avatar.media import MediaLimits, read_image, video_frame_times
from lipstream.errors import BadAudioError, BadAvatarError


def test_limits_checked_from_headers(tmp_path):
    with pytest.raises(BadAvatarError, match="the limit is 25,000,000 pixels"):
        read_image(png_bomb(tmp_path / "b.png"))
    with pytest.raises(BadAvatarError, match="8000 x 8000 pixels; the limit is 25,000,000"):
        read_image(png_bomb(tmp_path / "b8k.png", side=8000))
    with pytest.raises(BadAvatarError, match="at most 120 s"):
        video_frame_times(long_claim_video(tmp_path / "l.mkv"))
    times, duration = video_frame_times(long_claim_video(tmp_path / "ok.mkv", seconds=8), MediaLimits())
    assert list(times) == [0.0, 8.0] and duration == pytest.approx(8.04)  # not 16 s: the last frame lasts 40 ms
    flac = silent_flac(tmp_path / "s.flac", seconds=31 * 60)
    started = time.process_time()
    with pytest.raises(BadAudioError, match="31.0 min long; the limit is 30 min"):
        load_audio(flac)
    assert time.process_time() - started < 1.0  # refused from the header, not after decoding
    with pytest.raises(BadAvatarError, match="at most 1 s at 240 fps"):  # 300 frames 1 ms apart
        video_frame_times(crowded_video(tmp_path / "crowded.mkv", 300), MediaLimits(max_video_s=1.0))


def crowded_video(path, frames: int):
    """`frames` tiny frames 1 ms apart: a short video that holds far too many frames."""
    return video_at_times(path, range(frames), side=16)
