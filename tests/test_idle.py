"""Idle motion of a photo: still means untouched; life (blinks, sway) is bounded, local and deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from lipstream.face.landmarks import FaceTracker
from lipstream.render.idle import IdleMotion, ping_pong_index
from lipstream.render.life import SWAY_DEGREES, Life
from lipstream.render.static import StaticRenderer

FPS = 25.0


@pytest.fixture(scope="module")
def avatar(default_avatar):
    return default_avatar  # the bundled portrait, prepared once (conftest)


@pytest.fixture(scope="module")
def photo(avatar):
    return np.asarray(avatar.frames[0]), np.asarray(avatar.landmarks[0])


def test_still_photo_is_unchanged(avatar, photo):
    idle = IdleMotion(avatar, still=True)
    for k in (0, 1, 59, 1000):
        frame, landmarks, index = idle.frame(k)
        np.testing.assert_array_equal(frame, photo[0])
        np.testing.assert_array_equal(landmarks, photo[1])
        assert index == 0
    np.testing.assert_array_equal(StaticRenderer(avatar, still=True).render_frame(5, np.zeros(4, np.float32)), photo[0])


def test_life_moves_the_photo_deterministically(avatar, photo):
    order = (300, 3, 120)
    first = {k: IdleMotion(avatar, seed=1).frame(k)[0] for k in order}
    idle = IdleMotion(avatar, seed=1)
    for k in sorted(order):
        np.testing.assert_array_equal(idle.frame(k)[0], first[k])
    assert not np.array_equal(first[300], photo[0])
    assert not np.array_equal(IdleMotion(avatar, seed=2).frame(300)[0], first[300])


def test_blinks_are_brief_regular_and_only_touch_the_eyes(photo):
    frame, landmarks = photo
    life = Life(frame.shape, landmarks, FPS, seed=0, sway=False)
    amounts = np.array([life.blink_amount(k) for k in range(int(60 * FPS))])
    onsets = np.flatnonzero((amounts[1:] > 0) & (amounts[:-1] == 0))
    assert 60 / 6 - 1 <= len(onsets) <= 60 / 2 + 1
    assert np.all(np.diff(onsets) >= 2 * FPS - 1)
    closed = int(np.argmax(amounts))
    assert amounts[closed] == 1.0
    assert np.count_nonzero(amounts[closed - 3 : closed + 4]) <= 5  # ~160 ms at 25 fps

    blink = life.apply(closed, frame)
    changed = np.argwhere(np.any(blink != frame, axis=-1))
    assert len(changed)
    eye = np.linalg.norm(landmarks[33] - landmarks[263])
    eyes = landmarks[[33, 133, 263, 362]]
    nearest = np.min(np.linalg.norm(changed[:, None, ::-1] - eyes[None], axis=-1), axis=1)
    assert nearest.max() < 0.45 * eye
    open_frame = int(np.flatnonzero(amounts == 0)[0])
    np.testing.assert_array_equal(life.apply(open_frame, frame), frame)


def test_sway_is_small_and_smooth(photo):
    frame, landmarks = photo
    life = Life(frame.shape, landmarks, FPS, seed=5, blinks=False)
    face_height = np.ptp(landmarks[:468, 1])
    for k in range(0, 3000, 7):
        pose = life.pose(k)
        assert abs(np.degrees(np.arctan2(pose[1, 0], pose[0, 0]))) <= min(SWAY_DEGREES + 1e-6, 1.5)
        moved = life.move_landmarks(k, landmarks)
        assert np.abs(moved[1] - landmarks[1]).max() < 0.03 * face_height  # the nose tip
    steps = [np.abs(life.move_landmarks(k + 1, landmarks) - life.move_landmarks(k, landmarks)).max() for k in range(50)]
    assert max(steps) < 0.5  # under half a pixel per frame


def test_moved_landmarks_match_the_moved_face(avatar, photo):
    idle = IdleMotion(avatar, seed=4)
    life = idle.life
    eyes_open = [k for k in range(0, 1000, 5) if life.blink_amount(k) == 0]
    k = max(eyes_open, key=lambda k: np.abs(life.move_landmarks(k, photo[1]) - photo[1]).max())
    frame, landmarks, _ = idle.frame(k)
    with FaceTracker(video=False) as tracker:
        found = tracker(frame)
        original = tracker(photo[0])
    # Compare motions, so the detector's own offset from the prepared landmarks cancels out.
    motion = np.median(np.linalg.norm(landmarks - photo[1], axis=1)[:468])
    error = np.median(np.linalg.norm((found - original) - (landmarks - photo[1]), axis=1)[:468])
    assert motion > 2.0
    assert error < 0.25 * motion


def test_ping_pong_never_jumps():
    indices = [ping_pong_index(k, 4) for k in range(12)]
    assert indices == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
