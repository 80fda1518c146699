"""The lip model: its aperture/width contract, closing a parted neutral, and the least-squares inverse."""

from __future__ import annotations

import numpy as np
import pytest

from lipstream.face.mouth import LIP_INDICES, measure_mouth
from lipstream.face.region import SUBNASALE
from lipstream.motion.lip_model import LipModel
from lipstream.motion.params import WIDTH_AT_ROUNDED, WIDTH_AT_SPREAD, aperture_from_jaw_open


@pytest.fixture(scope="module")
def avatar(default_avatar):
    return default_avatar  # the bundled portrait, prepared once (conftest)


@pytest.fixture(scope="module")
def model(avatar):
    return LipModel.from_landmarks(np.asarray(avatar.landmarks[0]), avatar.manifest["neutral_mouth_width"])


def _grid(closes=(0.0, 0.4)):
    return np.array(
        [(j, s, c, 0.0) for j in np.linspace(0, 1, 5) for s in np.linspace(-1, 1, 5) for c in closes], np.float32
    )


def test_aperture_and_width_follow_the_parameter_contract(model):
    params = _grid(closes=(0.0, 0.4, 1.0))
    measures = measure_mouth(model.shape(params))
    expected = aperture_from_jaw_open(params[:, 0] * (1 - params[:, 2]))
    np.testing.assert_allclose(measures.aperture, expected, atol=1e-4)
    spread = params[:, 1]
    ratio = np.where(spread >= 0, 1 + spread * (WIDTH_AT_SPREAD - 1), 1 + spread * (1 - WIDTH_AT_ROUNDED))
    np.testing.assert_allclose(measures.width, ratio * model.neutral_width, rtol=1e-4)


def test_aperture_grows_with_jaw_open(model):
    for spread in (-1.0, 0.0, 1.0):
        jaw = np.linspace(0, 1, 11)
        params = np.stack([jaw, np.full_like(jaw, spread), np.zeros_like(jaw), np.zeros_like(jaw)], 1)
        aperture = measure_mouth(model.shape(params)).aperture
        assert np.all(np.diff(aperture) > 0)


def test_rest_closes_the_smiling_neutral_and_moves_only_the_lower_face(avatar, model):
    neutral = np.asarray(avatar.landmarks[0])
    assert measure_mouth(neutral).aperture[0] > 0.05  # the bundled portrait shows its teeth
    rest = model.shape(np.zeros(4, np.float32))
    assert measure_mouth(rest).aperture[0] == pytest.approx(0.0, abs=1e-5)
    above = neutral[:468, 1] < neutral[SUBNASALE, 1] - 0.05 * measure_mouth(neutral).eye_distance[0]
    np.testing.assert_array_equal(rest[:468][above], neutral[:468][above])
    opened = model.shape(np.array([1, 0, 0, 0], np.float32))
    assert opened[152, 1] > rest[152, 1]  # the chin drops with the jaw
    np.testing.assert_array_equal(model.shape(np.array([0.5, 0.2, 0, 1], np.float32)),
                                  model.shape(np.array([0.5, 0.2, 0, 0], np.float32)))


def test_batches_match_single_frames(model):
    params = _grid()[::7]
    batch = model.shape(params)
    assert batch.shape == (len(params), 478, 2) and batch.dtype == np.float32
    for p, shape in zip(params, batch):
        np.testing.assert_allclose(model.shape(p), shape, atol=1e-4)


def test_controls_are_the_shapes_control_points_without_building_the_rest(avatar):
    from lipstream.motion.lip_model import CONTROLS

    params = _grid()[::5]
    fresh = LipModel(np.asarray(avatar.landmarks[0]), avatar.manifest["neutral_mouth_width"])
    controls = [fresh.controls(p) for p in params]
    assert fresh._free is None  # the fast path did not build the free points' weights
    expected = fresh.shape(params)[:, list(CONTROLS)]
    np.testing.assert_array_equal(np.stack(controls), expected)
    np.testing.assert_array_equal(fresh.controls(params), expected)
    assert controls[0].dtype == np.float32 and controls[0].shape == (len(CONTROLS), 2)


def test_fit_inverts_shape(model):
    params = _grid()
    fitted = model.fit(model.shape(params))
    np.testing.assert_allclose(fitted[:, :3], params[:, :3], atol=0.02)
    pressed = np.array([[0.7, s, 1.0, 0.0] for s in (-1.0, 0.0, 0.6)], np.float32)
    fitted = model.fit(model.shape(pressed))
    np.testing.assert_allclose(fitted[:, 1:3], pressed[:, 1:3], atol=0.02)  # jaw_open is hidden by closure


def test_fit_is_independent_of_head_pose(model):
    params = np.array([0.6, -0.4, 0.0, 0.0], np.float32)
    shape = model.shape(params).astype(np.float64)
    angle = np.deg2rad(8.0)
    rotation = 1.1 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (shape - 256) @ rotation.T + [270, 240]
    np.testing.assert_allclose(model.fit(moved)[:3], params[:3], atol=0.02)


def test_fit_of_measured_lips_redraws_them_closely(avatar, model):
    neutral = np.asarray(avatar.landmarks[0])
    params = model.fit(neutral)
    redrawn = model.shape(params)
    error = np.linalg.norm(redrawn[list(LIP_INDICES)] - neutral[list(LIP_INDICES)], axis=1)
    assert np.median(error) / model.eye_px < 0.02
    assert measure_mouth(redrawn).aperture[0] == pytest.approx(measure_mouth(neutral).aperture[0], abs=0.03)
