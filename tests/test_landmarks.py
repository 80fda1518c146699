"""Face detection and landmarks on the bundled TFLite models: anchors, detection, the custom ops,
geometric equivariance, video tracking, no face, and no native log noise."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lipstream.bench.landmarks import compare
from lipstream.cli import app
from lipstream.errors import NotSupportedError
from lipstream.face.detector import LEFT_EYE, RIGHT_EYE, FaceDetector, ssd_anchors, weighted_nms
from lipstream.face.landmarks import N_LANDMARKS, FaceTracker, track_faces
from lipstream.face.mediapipe_ops import landmarks_to_transform_matrix, transform_landmarks, transform_tensor_bilinear
from lipstream.face.mesh import FaceMesh, roi_from_landmarks
from lipstream.face.models import DETECTOR_MODEL, MESH_MODEL, TfliteModel
from lipstream.face.split_model import SplitModel, split_graph
from lipstream.face.mouth import EYE_OUTER_CORNERS, INNER_LOWER, INNER_UPPER, measure_mouth


@pytest.fixture(scope="module")
def portrait(portrait_path) -> np.ndarray:
    return np.array(Image.open(portrait_path).convert("RGB"))


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker(video=False) as tracker:
        yield tracker


@pytest.fixture(scope="module")
def landmarks(portrait, tracker) -> np.ndarray:
    return tracker(portrait)


def _eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[EYE_OUTER_CORNERS[0]] - landmarks[EYE_OUTER_CORNERS[1]]))


def test_anchors_are_the_two_ssd_grids():
    anchors = ssd_anchors(128)
    assert anchors.shape == (896, 2) and anchors.dtype == np.float32
    fine, coarse = anchors[:512].reshape(16, 16, 2, 2), anchors[512:].reshape(8, 8, 6, 2)
    assert (fine == fine[:, :, :1]).all() and (coarse == coarse[:, :, :1]).all()  # a cell's anchors share a centre
    np.testing.assert_allclose(fine[0, :, 0, 0], (np.arange(16) + 0.5) / 16)  # x along a row
    np.testing.assert_allclose(fine[:, 0, 0, 1], (np.arange(16) + 0.5) / 16)  # y down a column
    np.testing.assert_allclose(coarse[7, 7, 0], [15 / 16, 15 / 16])


def test_weighted_nms_merges_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    keypoints = np.zeros((3, 6, 2), np.float32)
    keypoints[1] += 4
    scores = np.array([0.9, 0.3, 0.6], np.float32)
    (box, points, score), (far_box, _, far_score) = list(weighted_nms(boxes, keypoints, scores, 0.3))
    np.testing.assert_allclose(box, [0.25, 0, 10.25, 10], atol=1e-5)
    np.testing.assert_allclose(points, 1.0, atol=1e-5)
    assert score == pytest.approx(0.9) and far_score == pytest.approx(0.6)
    np.testing.assert_array_equal(far_box, boxes[2])


def test_detection_lands_on_the_portrait_face(portrait, landmarks):
    (face, *others) = FaceDetector()(portrait)
    assert face.score > 0.9 and not others
    x0, y0, x1, y1 = face.box
    for point in face.keypoints[:4]:  # eyes, nose tip, mouth: inside the box
        assert x0 < point[0] < x1 and y0 < point[1] < y1
    assert face.keypoints[RIGHT_EYE, 0] < face.keypoints[LEFT_EYE, 0]  # the subject's right eye is on the left
    mesh_centre = landmarks[:468].mean(axis=0)
    assert np.linalg.norm(face.box.reshape(2, 2).mean(axis=0) - mesh_centre) < 0.1 * (x1 - x0)
    assert 0.25 * portrait.shape[1] < x1 - x0 < 0.9 * portrait.shape[1]


def test_portrait_landmarks_are_a_face(landmarks):
    assert landmarks.shape == (N_LANDMARKS, 2) and landmarks.dtype == np.float32
    eye = _eye_distance(landmarks)
    assert landmarks[EYE_OUTER_CORNERS[0], 0] < landmarks[EYE_OUTER_CORNERS[1], 0]
    assert landmarks[INNER_UPPER, 1].mean() < landmarks[INNER_LOWER, 1].mean()  # upper lip above the lower
    assert landmarks[152, 1] > landmarks[1, 1] + 0.5 * eye  # the chin under the nose tip
    # The irises (468-472, 473-477) sit between each eye's corners.
    for iris, (a, b) in ((slice(468, 473), (33, 133)), (slice(473, 478), (362, 263))):
        centre = landmarks[iris].mean(axis=0)
        assert min(landmarks[a, 0], landmarks[b, 0]) < centre[0] < max(landmarks[a, 0], landmarks[b, 0])


@pytest.mark.parametrize("degrees, shift", [(15.0, (20.0, -12.0)), (-25.0, (-30.0, 18.0))])
def test_landmarks_follow_a_rotated_and_shifted_copy(portrait, tracker, landmarks, degrees, shift):
    h, w = portrait.shape[:2]
    move = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    move[:, 2] += shift
    moved = cv2.warpAffine(portrait, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    expected = landmarks @ move[:, :2].T + move[:, 2]
    error = np.linalg.norm(tracker(moved) - expected, axis=1)
    # The model's own jitter: a pure shift moves points by 0.75 px (median) on this face, eyes 121 px apart.
    assert np.median(error) < 0.02 * _eye_distance(landmarks)
    assert np.percentile(error, 95) < 0.04 * _eye_distance(landmarks)


def test_video_tracking_follows_a_moving_face_without_detecting_again(portrait, landmarks):
    canvas = np.full((720, 760, 3), 90, np.uint8)
    shifts = [(8 * k, 5 * k) for k in range(25)]
    frames = []
    for dx, dy in shifts:
        frame = canvas.copy()
        frame[40 + dy:40 + dy + 512, 20 + dx:20 + dx + 512] = portrait
        frames.append(frame)
    with FaceTracker(video=True) as tracker:
        calls = []
        detect = tracker._detector
        tracker._detector = lambda rgb: calls.append(1) or detect(rgb)
        found = [tracker(f) for f in frames]
    assert len(calls) == 1  # the face is followed from its landmarks after the first frame
    for (dx, dy), points in zip(shifts, found):
        error = np.linalg.norm(points - (landmarks + [20 + dx, 40 + dy]), axis=1)
        assert np.median(error) < 0.02 * _eye_distance(landmarks)


def test_video_tracking_detects_again_after_the_face_is_lost(portrait):
    blank = np.full_like(portrait, 128)
    track = track_faces([portrait, blank, portrait])
    assert not np.isnan(track[0]).any() and np.isnan(track[1]).all() and not np.isnan(track[2]).any()
    np.testing.assert_allclose(track[2], track[0], atol=0.5)


def test_no_face_gives_nan(tracker):
    rng = np.random.default_rng(0)
    for image in (np.full((240, 320, 3), 200, np.uint8), rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)):
        points = tracker(image)
        assert points.shape == (N_LANDMARKS, 2) and np.isnan(points).all()
        assert tracker.faces_in_last_frame == 0
    assert track_faces([]).shape == (0, N_LANDMARKS, 2)


def test_the_largest_of_two_faces_is_measured(portrait, tracker):
    canvas = np.full((460, 700, 3), 100, np.uint8)
    canvas[90:370, 0:280] = cv2.resize(portrait, (280, 280), interpolation=cv2.INTER_AREA)
    canvas[30:430, 290:690] = cv2.resize(portrait, (400, 400), interpolation=cv2.INTER_AREA)
    points = tracker(canvas)
    assert tracker.faces_in_last_frame == 2
    assert points[:, 0].min() > 290 and _eye_distance(points) > 0.7 * 121  # the large copy, 400/512 of the portrait


def test_aperture_grows_when_the_mouth_is_stretched(tracker, landmarks, portrait):
    """A copy with the mouth region stretched down 1.6 times measures a wider inner-lip opening."""
    mouth = landmarks[list(INNER_UPPER + INNER_LOWER)]
    (x0, y0), (x1, y1) = mouth.min(axis=0).astype(int) - 20, mouth.max(axis=0).astype(int) + 20
    stretched = portrait.copy()
    grown = cv2.resize(portrait[y0:y1, x0:x1], (x1 - x0, int((y1 - y0) * 1.6)), interpolation=cv2.INTER_LINEAR)
    top = y0 - int((y1 - y0) * 0.3)
    stretched[top:top + grown.shape[0], x0:x1] = grown
    assert measure_mouth(tracker(stretched)).aperture[0] > 1.3 * measure_mouth(landmarks).aperture[0]  # 0.18 vs 0.12


def test_transform_matrix_and_sampling_follow_mediapipes_ops():
    # Two points define the rotation (45 degrees) and a box 4 x 2 units around them.
    points = np.zeros((1, 3, 3), np.float32)
    points[0, :, :2] = [[0, 0], [2, 2], [1, 1 + np.sqrt(2)]]
    options = {"left_rotation_idx": 0, "right_rotation_idx": 1, "target_rotation_radians": 0.0,
               "subset_idxs": [0, 1, 2], "output_width": 4, "output_height": 4, "scale_x": 1.0, "scale_y": 1.0}
    matrix = landmarks_to_transform_matrix([points], options)
    assert matrix.shape == (1, 4, 4)
    corner = transform_landmarks([np.array([[[0.0, 0.0], [4.0, 4.0]]], np.float32), matrix], {})[0]
    # The grid's corners land on the box's: levelled, the points span 2 sqrt(2) x 1 around (sqrt(2), 0.5).
    assert np.linalg.norm(corner[0] - corner[1]) == pytest.approx(np.hypot(2 * np.sqrt(2), 1.0), rel=1e-5)
    np.testing.assert_allclose(corner.mean(axis=0), [1 - 0.5 / np.sqrt(2), 1 + 0.5 / np.sqrt(2)], atol=1e-5)
    # Sampling with an identity matrix (pixel centres aligned) copies the features; outside reads 0.
    features = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(1, 3, 3, 2)[..., :1]
    identity = np.eye(4, dtype=np.float32)[None]
    np.testing.assert_allclose(transform_tensor_bilinear([features, identity], {"output_height": 3, "output_width": 3}),
                               features, atol=1e-6)
    shifted = identity.copy()
    shifted[0, 0, 3] = 5.0
    assert not transform_tensor_bilinear([features, shifted], {"output_height": 3, "output_width": 3}).any()


def test_a_model_rebuilt_from_its_graph_computes_the_same():
    """The flatbuffer surgery on a model without custom ops: one piece, same outputs."""
    x = np.random.default_rng(1).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    rebuilt = SplitModel(DETECTOR_MODEL, {}).run({"input": x})
    original = TfliteModel(DETECTOR_MODEL).run({"input": x})
    for name in ("regressors", "classificators"):
        np.testing.assert_allclose(rebuilt[name], original[name], rtol=1e-5, atol=1e-5)


def test_the_attention_mesh_is_cut_at_its_custom_ops():
    graph = split_graph(MESH_MODEL)
    assert len(graph.pieces) == 3
    assert [sorted({c.name for c in group}) for group in graph.calls] == [
        ["Landmarks2TransformMatrix", "TransformTensorBilinear"], ["TransformLandmarks"], []]
    with pytest.raises(ValueError, match="no implementation"):
        SplitModel(MESH_MODEL, {})


def test_roi_from_landmarks_is_square_levelled_and_enlarged(landmarks):
    roi = roi_from_landmarks(landmarks)
    width = np.ptp(landmarks[:, 0])
    assert roi.side == pytest.approx(1.5 * max(width, np.ptp(landmarks[:, 1])))
    left, right = landmarks[list(EYE_OUTER_CORNERS)]
    assert roi.rotation == pytest.approx(np.arctan2(right[1] - left[1], right[0] - left[0]))


def test_creating_and_running_the_tracker_writes_nothing_to_stderr(portrait, capfd):
    with FaceTracker(video=True) as tracker:
        tracker(portrait)
    FaceMesh()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_native_log_lines_are_hidden_unless_debug(tmp_path):
    """In a fresh process (TFLite logs its delegate line once per process): nothing on stderr by
    default, the XNNPACK line with LIPSTREAM_LOG=debug, so the silencing is what hides it."""
    code = "from lipstream.face.landmarks import FaceTracker; FaceTracker()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("LIPSTREAM_LOG", None)
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    debug = subprocess.run([sys.executable, "-c", code], env={**env, "LIPSTREAM_LOG": "debug"},
                           capture_output=True, text=True, check=True)
    assert quiet.stderr == ""
    assert "XNNPACK" in debug.stderr


def test_landmark_bench_says_when_mediapipe_is_missing(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "mediapipe" or m.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    out = tmp_path / "landmarks.json"
    result = CliRunner().invoke(app, ["bench", "landmarks", "--media", str(tmp_path), "-o", str(out)])
    assert result.exit_code == NotSupportedError.exit_code
    assert "MediaPipe 0.10.21" in result.output and "not installed" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_bench_compare_measures_aperture_agreement(landmarks):
    rng = np.random.default_rng(3)
    track = np.repeat(landmarks[None], 20, axis=0)
    track[:, list(INNER_LOWER), 1] += rng.uniform(0, 6, (20, 1))  # the lower lip moves
    moved = track + rng.normal(0, 0.05, track.shape).astype(np.float32)
    moved[4] = np.nan  # one frame without a face
    same = compare(track, track)
    assert same["aperture_r"] == pytest.approx(1.0) and same["max_point_distance_px"] == 0
    result = compare(moved, track)
    assert result["found_lipstream"] == 19 and result["frames_compared"] == 19
    assert 0.95 < result["aperture_r"] < 1.0 and 0 < result["median_point_distance_px"] < 0.1
