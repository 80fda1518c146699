import numpy as np

from lipstream.face import align
from lipstream.face.mouth import EYE_OUTER_CORNERS


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def test_fit_similarity_recovers_a_known_transform():
    points = np.random.default_rng(0).uniform(0, 500, (12, 2))
    truth = _similarity(0.3, 1.7, (-40.0, 25.0))
    assert np.allclose(align.fit_similarity(points, align.apply(truth, points)), truth, atol=1e-9)


def test_fit_similarity_broadcasts_over_frames():
    points = np.random.default_rng(1).uniform(0, 500, (12, 2))
    truths = np.stack([_similarity(a, 1.0 + a, (a * 10, -a)) for a in np.linspace(-0.5, 0.5, 5)])
    fitted = align.fit_similarity(align.apply(truths, points), points)  # (5, 2, 3), back onto points
    assert fitted.shape == (5, 2, 3)
    assert np.allclose(align.apply(fitted, align.apply(truths, points)), points, atol=1e-9)


def test_forward_and_inverse_round_trip():
    transform = _similarity(-1.1, 0.4, (300.0, -12.0))
    points = np.random.default_rng(2).uniform(-100, 100, (30, 2))
    assert np.allclose(align.apply(align.invert(transform), align.apply(transform, points)), points, atol=1e-9)
    assert np.allclose(align.scale_of(transform), 0.4)


def test_canonical_pose_removes_head_motion(default_avatar):
    face = np.asarray(default_avatar.landmarks[0], np.float64)
    moved = align.apply(_similarity(0.25, 1.3, (35.0, -20.0)), face)
    shape = align.mean_stable_shape(face)
    canonical = align.apply(align.to_canonical(face, shape), face)
    canonical_moved = align.apply(align.to_canonical(moved, shape), moved)
    assert np.allclose(canonical, canonical_moved, atol=1e-6)
    # Canonical units: outer eye corners one apart, level, around the origin.
    eyes = shape[[align.STABLE_POINTS.index(i) for i in EYE_OUTER_CORNERS]]
    assert np.allclose(eyes, [[-0.5, 0], [0.5, 0]], atol=1e-6)
    # The mouth is below the eyes, about one eye distance.
    assert 0.5 < canonical[13, 1] < 1.2


def test_mean_shape_ignores_head_motion_and_missing_frames(default_avatar):
    face = np.asarray(default_avatar.landmarks[0], np.float64)
    frames = np.stack([align.apply(_similarity(a, 1 + a, (a * 50, 0)), face) for a in np.linspace(-0.3, 0.3, 7)])
    frames[3] = np.nan
    assert np.allclose(align.mean_stable_shape(frames), align.mean_stable_shape(face), atol=1e-5)
