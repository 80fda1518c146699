"""The warp renderer: mouth opening measured on its frames, still pixels, determinism, video frames."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest

from lipstream.face.landmarks import FaceTracker
from lipstream.face.mouth import measure_mouth
from lipstream.render.base import create_renderer
from lipstream.render.mesh_warp import MeshWarp, triangulate
from lipstream.render.warp import WarpRenderer

OPEN = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
CLOSED = np.zeros(4, np.float32)


@pytest.fixture(scope="module")
def avatar(default_avatar):
    return default_avatar  # the bundled portrait, prepared once (conftest)


@pytest.fixture(scope="module")
def still(avatar):
    return WarpRenderer(avatar, still=True)


def _outside_box(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    keep = np.ones(frame.shape[:2], bool)
    keep[y0:y1, x0:x1] = False
    return frame[keep]


def test_frames_are_rgb_uint8_of_the_avatar_size(avatar, still):
    frame = still.render_frame(0, OPEN)
    width, height = avatar.size
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8


def test_measured_aperture_follows_jaw_open(still):
    with FaceTracker(video=False) as tracker:
        apertures = [measure_mouth(tracker(still.render_frame(0, np.array([j, 0, 0, 0.5], np.float32)))).aperture[0]
                     for j in (0.0, 0.5, 1.0)]
    assert apertures[0] < 0.03  # the smiling photo's parted lips are closed
    assert apertures[1] > apertures[0] + 0.08
    assert apertures[2] > apertures[1] + 0.05


def test_still_leaves_everything_outside_the_mouth_box_untouched(avatar, still):
    photo = np.asarray(avatar.frames[0])
    box = avatar.mouth_boxes[0]
    for k, params in enumerate([CLOSED, OPEN, [0.4, -1, 0, 0.3], [0.7, 1, 1, 0]]):
        frame = still.render_frame(k, np.array(params, np.float32))
        np.testing.assert_array_equal(_outside_box(frame, box), _outside_box(photo, box))
        assert not np.array_equal(frame, photo)


def test_open_mouth_is_dark_inside_with_light_teeth(avatar, still):
    model = still._geometry(0).model
    lips = model.shape(OPEN)
    frame = still.render_frame(0, OPEN).astype(np.float32)
    centre = np.round((lips[13] + lips[14]) / 2).astype(int)  # between the inner lip midpoints
    luma = frame @ np.array([0.299, 0.587, 0.114], np.float32)
    teeth_row = int(round(lips[13, 1] + 0.03 * model.eye_px))
    half = int(0.1 * model.eye_px)
    skin = luma[int(lips[152, 1] - 0.1 * model.eye_px), int(lips[152, 0])]
    cavity = luma[centre[1], centre[0]]
    assert cavity < 0.35 * skin
    assert luma[teeth_row, centre[0] - half : centre[0] + half].max() > max(0.75 * skin, 3 * cavity)


def test_frames_are_deterministic(avatar):
    params = np.array([0.6, 0.3, 0.0, 0.7], np.float32)
    first = [WarpRenderer(avatar, seed=3).render_frame(k, params) for k in (0, 40, 7)]
    again = WarpRenderer(avatar, seed=3)
    for k, frame in zip((40, 7, 0), (first[1], first[2], first[0])):
        np.testing.assert_array_equal(again.render_frame(k, params), frame)


def test_registered_under_its_name(avatar):
    assert isinstance(create_renderer("warp", avatar, still=True), WarpRenderer)


def test_each_video_frame_uses_its_own_landmarks(avatar):
    """A two-frame 'video' whose second frame is the first shifted: its mouth moves along."""
    shift = 12
    frames = np.asarray(avatar.frames)
    shifted = np.roll(frames, shift, axis=2)
    video = dataclasses.replace(
        avatar,
        manifest={**avatar.manifest, "kind": "video", "frame_count": 2},
        frames=np.concatenate([frames, shifted]),
        landmarks=np.concatenate([avatar.landmarks, avatar.landmarks + [shift, 0]]).astype(np.float32),
        face_boxes=np.concatenate([avatar.face_boxes, avatar.face_boxes + [shift, 0, shift, 0]]),
        mouth_boxes=np.concatenate([avatar.mouth_boxes, avatar.mouth_boxes + [shift, 0, shift, 0]]),
        mouth_masks=np.concatenate([avatar.mouth_masks, avatar.mouth_masks]),
    )
    renderer = WarpRenderer(video)
    first, second = renderer.render_frame(0, OPEN), renderer.render_frame(1, OPEN)
    x0, y0, x1, y1 = (int(v) for v in avatar.mouth_boxes[0])
    difference = np.abs(second[y0:y1, x0 + shift : x1 + shift].astype(int) - first[y0:y1, x0:x1])
    assert np.mean(difference) < 2.0


def test_mesh_warp_moves_a_point_and_keeps_the_border():
    box = np.array([0, 0, 40, 30])
    src = np.array([[0, 0], [39, 0], [0, 29], [39, 29], [20, 15]], float)
    warp = MeshWarp(src, triangulate(src), box)
    dst = src.copy()
    dst[4] = [24, 17]
    map_x, map_y = warp.maps(dst)
    assert map_x.shape == (30, 40) and map_x.dtype == np.float32
    assert map_x[17, 24] == pytest.approx(20, abs=1e-3) and map_y[17, 24] == pytest.approx(15, abs=1e-3)
    assert map_x[0, 10] == pytest.approx(10, abs=1e-3) and map_y[29, 5] == pytest.approx(29, abs=1e-3)


def test_triangulation_keeps_constraint_edges():
    # A thin diamond whose Delaunay diagonal is the short one; the constraint asks for the long one.
    points = np.array([[0, 0], [10, -1], [20, 0], [10, 1]], float)
    triangles = triangulate(points, [(0, 2)])
    edges = {frozenset((t[i], t[(i + 1) % 3])) for t in triangles for i in range(3)}
    assert frozenset((0, 2)) in edges
