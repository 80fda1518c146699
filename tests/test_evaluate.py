"""The sync evaluator on clips the tests make: known shifts, VFR, late audio, fixes, bad input."""

from __future__ import annotations

import dataclasses
import json

import av
import cv2
import numpy as np
import pytest

from lipstream.errors import BadAudioError, NotSupportedError
from lipstream.evaluate import (
    BadVideoError,
    compare,
    evaluate_clip,
    evaluate_video_sync,
    generate_sync_report,
    read_clip,
    run_eval,
    write_realigned,
)
from lipstream.bench.sync import shift_audio as shifted
from synthetic_talk import portrait, speech, write_talking_clip

FRAME_MS = 40.0  # one frame at 25 fps: the accuracy asked for


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def talk_path(media):
    return write_talking_clip(media / "talk.mp4", speech(6.0))


@pytest.fixture(scope="module")
def talk(talk_path):
    return read_clip(talk_path)


@pytest.fixture(scope="module")
def early_path(media):
    """The talking clip with its audio 120 ms early."""
    return write_talking_clip(media / "early.mp4", speech(6.0), shift_ms=120)


@pytest.mark.parametrize("shift_ms", [-200, -80, 0, 80, 200])
def test_recovers_injected_shift_within_a_frame(talk, shift_ms):
    metrics = evaluate_clip(dataclasses.replace(talk, audio=shifted(talk.audio, shift_ms)))
    assert abs(metrics.offset_ms - shift_ms) <= FRAME_MS
    assert metrics.confidence > 0.2


def test_sub_frame_resolution(talk):
    base = evaluate_clip(talk).offset_ms
    for shift_ms in (10, 20):
        moved = evaluate_clip(dataclasses.replace(talk, audio=shifted(talk.audio, shift_ms))).offset_ms
        assert moved - base == pytest.approx(shift_ms, abs=5)


def test_shifted_file_reads_like_the_shifted_array(early_path):
    metrics = evaluate_video_sync(early_path)
    assert abs(metrics.offset_ms - 120) <= FRAME_MS
    assert metrics.grade in {"C", "D"}
    assert metrics.violation_rate > 0.5  # audio 120 ms early is beyond ITU's 45 ms


def test_fix_realigns_audio_and_copies_video(early_path, media):
    offset = evaluate_video_sync(early_path).offset_ms
    fixed = write_realigned(early_path, media / "fixed.mp4", offset)
    assert abs(evaluate_video_sync(fixed).offset_ms) < 20
    assert _video_packets(fixed) == _video_packets(early_path)


def test_audio_stream_starting_late_is_placed_by_timestamps(media):
    path = write_talking_clip(media / "late.mp4", speech(6.0), audio_start_s=0.2)
    metrics = evaluate_video_sync(path)
    assert metrics.audio_start_s > 0.1
    assert abs(metrics.offset_ms) <= FRAME_MS
    assert any("starts" in note for note in metrics.notes)


def test_variable_frame_rate(media):
    path = write_talking_clip(media / "vfr.mp4", speech(6.0), vfr=True, shift_ms=-80)
    metrics = evaluate_video_sync(path)
    assert metrics.variable_frame_rate
    assert abs(metrics.offset_ms + 80) <= FRAME_MS


def test_60_fps_is_tracked_at_30(media):
    path = write_talking_clip(media / "fast.mp4", speech(4.0), fps=60, shift_ms=80)
    clip = read_clip(path)
    assert clip.info.n_frames == 240 and len(clip.lips.times_s) == 120
    assert abs(evaluate_clip(clip).offset_ms - 80) <= FRAME_MS


def test_face_lost_mid_clip_skips_windows_with_reason(media):
    path = write_talking_clip(media / "gone.mp4", speech(6.0), no_face_s=(2.0, 4.5))
    metrics = evaluate_video_sync(path)
    reasons = [w.skipped for w in metrics.windows if w.skipped]
    assert any(r.startswith("no face") for r in reasons)
    assert metrics.measured_windows
    assert abs(metrics.offset_ms) <= FRAME_MS


def test_reports_and_comparison(talk, media):
    metrics = evaluate_clip(talk)
    files = generate_sync_report(metrics, media / "report")
    report = json.loads(files.json.read_text())
    assert report["offset_ms"] == pytest.approx(metrics.offset_ms, abs=0.1)
    assert "audio leads" in report["sign_convention"]
    assert len(report["windows"]) == len(metrics.windows)
    assert "grade" in files.markdown.read_text()
    for png in (files.offset_plot, files.curve_plot, files.alignment_plot):
        assert png.stat().st_size > 1000
    late = evaluate_clip(dataclasses.replace(talk, audio=shifted(talk.audio, -160)))
    table = compare([metrics, late], media / "report")
    assert table.markdown.read_text().count("talk.mp4") == 2
    assert table.plot.stat().st_size > 1000


def test_run_eval_writes_reports_and_returns_exit_code(talk_path, media):
    lines: list[str] = []
    assert run_eval([talk_path], out_dir=media / "cli", compare=True, echo=lines.append) == 0
    assert lines[0].startswith("talk.mp4: offset")
    assert (media / "cli" / "talk_sync.json").is_file()
    assert (media / "cli" / "sync_comparison.md").is_file()
    with pytest.raises(NotSupportedError):
        run_eval([talk_path, talk_path], fix=media / "x.mp4", echo=lines.append)


def test_silence_only_is_refused(talk):
    with pytest.raises(BadAudioError, match="no speech"):
        evaluate_clip(dataclasses.replace(talk, audio=np.zeros_like(talk.audio)))


def test_video_without_audio_needs_audio_option(media):
    path = write_talking_clip(media / "mute.mp4", speech(2.5), with_audio=False)
    with pytest.raises(BadAudioError, match="--audio"):
        read_clip(path)


def test_audio_of_another_length_is_refused(talk_path):
    with pytest.raises(BadAudioError, match="long"):
        read_clip(talk_path, audio=speech(9.0))


def test_no_face(media):
    path = write_talking_clip(media / "blank.mp4", speech(2.5), no_face_s=(0.0, 10.0))
    with pytest.raises(BadVideoError, match="no face"):
        read_clip(path)


def test_face_too_small(media):
    path = media / "tiny.mp4"
    image, _ = portrait()
    canvas = np.full((256, 256, 3), 180, np.uint8)
    canvas[100:172, 100:172] = cv2.resize(image, (72, 72), interpolation=cv2.INTER_AREA)
    _write_still(path, canvas, seconds=2.5)
    with pytest.raises(BadVideoError, match="too small"):
        read_clip(path, audio=speech(2.5))


def test_unreadable_and_missing_files(media):
    junk = media / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(BadVideoError, match="could not be read"):
        read_clip(junk)
    with pytest.raises(BadVideoError, match="no such file"):
        read_clip(media / "missing.mp4")


def test_clip_shorter_than_a_window(media):
    path = write_talking_clip(media / "short.mp4", speech(1.5))
    with pytest.raises(BadVideoError, match="at least 2 s"):
        evaluate_video_sync(path)


def _video_packets(path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        return [(p.pts, bytes(p)) for p in container.demux(video=0) if p.size]


def _write_still(path, rgb: np.ndarray, seconds: float, fps: int = 25) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = rgb.shape[1], rgb.shape[0]
        stream.pix_fmt = "yuv420p"
        for k in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
