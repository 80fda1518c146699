"""Whole renders of the bundled avatar, checked by measuring the output with the face module."""

import av
import numpy as np
import pytest

import lipstream
from lipstream.audio import SAMPLE_RATE, FrameClock, load_audio
from lipstream.audio.features import frame_features
from lipstream.avatar.resolve import resolve_avatar
from lipstream.face import measure_mouth, track_faces
from lipstream.offline import RenderOptions, render_file

from conftest import espeak

FPS = 25
PAUSE_S = 0.6


@pytest.fixture(scope="module")
def speech_with_pauses(tmp_path_factory):
    """Two spoken phrases with a 0.6 s pause between them and 0.5 s of silence around them."""
    tmp = tmp_path_factory.mktemp("speech")
    first = load_audio(espeak("Hello there, how are you today?", tmp / "a.wav"))
    second = load_audio(espeak("Papa bought a big map of Spain.", tmp / "b.wav"))
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    edge = np.zeros(SAMPLE_RATE // 2, np.float32)
    audio = np.concatenate([edge, first, pause, second, edge])
    silent_spans = [(0, len(edge)), (len(edge) + len(first), len(edge) + len(first) + len(pause)),
                    (len(audio) - len(edge), len(audio))]
    return audio, silent_spans


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, speech_with_pauses):
    audio, _ = speech_with_pauses
    out = tmp_path_factory.mktemp("render") / "out.mp4"
    summary = render_file(resolve_avatar("default"), audio, out, RenderOptions(fps=FPS), sample_rate=SAMPLE_RATE)
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return out, summary, frames


def test_output_duration_matches_audio(rendered, speech_with_pauses):
    audio, _ = speech_with_pauses
    out, summary, frames = rendered
    assert abs(len(frames) / FPS - len(audio) / SAMPLE_RATE) <= 1 / FPS
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert float(video.duration * video.time_base) == pytest.approx(len(frames) / FPS, abs=1e-3)
        assert abs(float(sound.duration * sound.time_base) - len(audio) / SAMPLE_RATE) <= 1 / FPS
    assert summary.renderer == "warp" and summary.size == (512, 512)


def test_mouth_follows_the_audio_and_closes_in_silence(rendered, speech_with_pauses):
    audio, silent_spans = speech_with_pauses
    _, _, frames = rendered
    aperture = measure_mouth(track_faces(frames)).aperture
    assert np.isfinite(aperture).all(), "the face is found in every output frame"
    loudness = frame_features(audio, FPS).rms[: len(aperture)]
    assert np.corrcoef(aperture, loudness)[0, 1] > 0.3
    clock = FrameClock(FPS)
    spoken = np.zeros(len(aperture), bool)
    for start, end in silent_spans:
        # Frames wholly inside the silence, 100 ms in from its edges (the mouth may anticipate).
        first = clock.frame_count(start + SAMPLE_RATE // 10)
        last = (end - SAMPLE_RATE // 10) * FPS // SAMPLE_RATE
        assert last > first
        assert aperture[first:last].max() < 0.03, f"mouth open in the silence {start / SAMPLE_RATE:.2f} s"
    spoken[clock.frame_count(SAMPLE_RATE // 2) : clock.frame_count(len(audio) - SAMPLE_RATE // 2)] = True
    assert np.percentile(aperture[spoken], 90) > 0.08, "the mouth opens while speaking"


def test_still_photo_changes_only_the_lower_face(speech_with_pauses):
    audio, _ = speech_with_pauses
    with lipstream.open("default", still=True) as avatar:
        photo = np.asarray(avatar.package.frames[0])
        x0, y0, x1, y1 = avatar.package.mouth_boxes[0]
        outside = np.ones(photo.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        changed_inside = 0
        frames, info = avatar.render(audio[: 2 * SAMPLE_RATE], sample_rate=SAMPLE_RATE)
        assert (info.renderer, info.frames, info.duration_s) == ("warp", 50, 2.0)
        for frame in frames:
            assert frame.image.shape == photo.shape and frame.image.dtype == np.uint8
            assert np.array_equal(frame.image[outside], photo[outside])
            changed_inside += int(np.any(frame.image != photo))
        assert changed_inside > 10, "the mouth moved"


def test_live_chunks_give_the_same_frames_as_a_file(speech_with_pauses):
    audio, _ = speech_with_pauses
    clip = audio[: 3 * SAMPLE_RATE]
    with lipstream.open("default", still=True, driver="viseme") as avatar:
        whole = list(avatar.render(clip, sample_rate=SAMPLE_RATE)[0])
        pcm = (clip * 32767).astype("<i2").tobytes()
        chunks = [pcm[i : i + 640] for i in range(0, len(pcm), 640)]  # 20 ms chunks of raw PCM16 bytes
        live = list(avatar.render(iter(chunks), sample_rate=SAMPLE_RATE)[0])
    assert [f.index for f in live] == list(range(len(whole)))
    assert [f.pts for f in live] == [f.pts for f in whole]
    assert np.array_equal(np.concatenate([f.audio for f in live])[:, 0], (clip * 32767).astype(np.int16))
    assert all(len(a.audio) == len(b.audio) for a, b in zip(live, whole))
    aperture_whole = measure_mouth(track_faces([f.image for f in whole])).aperture
    aperture_live = measure_mouth(track_faces([f.image for f in live])).aperture
    assert np.corrcoef(aperture_whole, aperture_live)[0, 1] > 0.8
