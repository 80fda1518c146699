import json
from fractions import Fraction
import logging

import av
import cv2
import numpy as np
import pytest

from lipstream.avatar.package import SCHEMA_VERSION, load_package
from lipstream.avatar.prepare import prepare
from lipstream.avatar.resolve import resolve_avatar
from lipstream.errors import BadAvatarError


def _write_video(path, frames, fps=25, times=None):
    """Write RGB frames to an H.264 mp4; `times` (s) gives irregular timestamps for VFR input."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if times is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {"bf": "0"}
        for k, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if times is not None:
                vf.pts, vf.time_base = int(round(times[k] * 1000)), stream.time_base
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return path


def test_photo_package_contents(default_avatar, portrait_path):
    a = default_avatar
    assert a.kind == "image" and a.frame_count == 1 and a.size == (512, 512)
    assert a.frames.shape == (1, 512, 512, 3) and a.frames.dtype == np.uint8
    assert isinstance(a.frames, np.memmap)
    lm = a.landmarks[0]
    x0, y0, x1, y1 = a.mouth_boxes[0]
    mouth = lm[[13, 14, 61, 291]]
    assert ((mouth[:, 0] > x0) & (mouth[:, 0] < x1) & (mouth[:, 1] > y0) & (mouth[:, 1] < y1)).all()
    eyes = lm[[33, 263]]
    assert (eyes[:, 1] < y0).all(), "the region a renderer may change must not reach the eyes"
    assert a.mouth_masks[0].max() == 255 and a.mouth_masks[0][0, 0] == 0
    assert 0.4 < a.manifest["neutral_mouth_width"] < 1.0
    assert len(a.manifest["source"]["sha256"]) == 64


def test_video_package_resamples_vfr_to_target_fps(tmp_path, portrait_path):
    photo = cv2.cvtColor(cv2.imread(str(portrait_path)), cv2.COLOR_BGR2RGB)
    small = cv2.resize(photo, (256, 256))
    # 1.6 s of video at irregular times, each frame brighter than the last.
    times = np.cumsum(np.r_[0, np.random.default_rng(0).uniform(0.02, 0.06, 39)])
    frames = [np.clip(small.astype(int) + 2 * k - 40, 0, 255).astype(np.uint8) for k in range(40)]
    src = _write_video(tmp_path / "vfr.mp4", frames, times=times)
    package = load_package(prepare(src, tmp_path / "vid", fps=25))
    duration = times[-1] + np.median(np.diff(times))
    assert package.kind == "video" and package.frame_count == int(duration * 25)
    brightness = package.frames.reshape(package.frame_count, -1).mean(axis=1)
    assert np.all(np.diff(brightness) >= -0.5), "frames must come out in time order"
    # Output frame k shows the source frame that is on screen at k/25 s.
    for k in (5, 17, 30):
        expected = np.searchsorted(times, k / 25 + 1e-6, side="right") - 1
        assert abs(brightness[k] - frames[expected].mean()) < 2.0
    assert np.isfinite(package.landmarks).all()


def test_bad_sources_are_explained(tmp_path, portrait_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 128, np.uint8))
    with pytest.raises(BadAvatarError, match="no face"):
        prepare(blank, tmp_path / "a")
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), cv2.resize(cv2.imread(str(portrait_path)), (96, 96)))
    with pytest.raises(BadAvatarError, match="too small|no face"):
        prepare(tiny, tmp_path / "b")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(BadAvatarError, match="could not be read"):
        prepare(junk, tmp_path / "c")
    photo = cv2.cvtColor(cv2.imread(str(portrait_path)), cv2.COLOR_BGR2RGB)
    short = _write_video(tmp_path / "short.mp4", [cv2.resize(photo, (128, 128))] * 12)
    with pytest.raises(BadAvatarError, match="at least 1 s"):
        prepare(short, tmp_path / "d")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no temporary package left behind"
    for name in "abcd":
        assert not (tmp_path / name).exists()


def test_several_faces_pick_the_largest_and_warn(tmp_path, portrait_path, caplog):
    photo = cv2.imread(str(portrait_path))
    canvas = np.full((512, 832, 3), 200, np.uint8)
    canvas[:, :512] = photo
    canvas[128:448, 512:832] = cv2.resize(photo, (320, 320))
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), canvas)
    with caplog.at_level(logging.WARNING):
        package = load_package(prepare(path, tmp_path / "two"))
    assert "2 faces" in caplog.text
    assert package.landmarks[0][:, 0].mean() < 512, "the larger face (left) is used"


def test_broken_packages_are_refused_clearly(tmp_path, portrait_path):
    path = prepare(portrait_path, tmp_path / "p")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "schema": SCHEMA_VERSION - 1}))
    with pytest.raises(BadAvatarError, match="older version"):
        load_package(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BadAvatarError, match="not valid JSON"):
        load_package(path)
    (path / "manifest.json").write_text(json.dumps(manifest))
    np.save(path / "landmarks.npy", np.zeros((1, 10, 2), np.float32))
    with pytest.raises(BadAvatarError, match="landmarks.npy has shape"):
        load_package(path)
    (path / "frames.npy").unlink()
    with pytest.raises(BadAvatarError, match="frames.npy is missing"):
        load_package(path)
    (path / "frames.npy").write_bytes(b"garbage")
    with pytest.raises(BadAvatarError, match="can't be read"):
        load_package(path)
    with pytest.raises(BadAvatarError, match="does not exist"):
        load_package(tmp_path / "nowhere")


def test_resolve_default_and_files(portrait_path):
    a = resolve_avatar("default")
    assert a.name == "default" and a.kind == "image"
    assert resolve_avatar("default").path == a.path, "prepared once, then cached"
    assert resolve_avatar(portrait_path).kind == "image"
    with pytest.raises(BadAvatarError, match="not found"):
        resolve_avatar("no-such-avatar")
