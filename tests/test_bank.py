"""The mouth bank and the `bank` renderer, on a short talking video made from the bundled portrait."""

import cv2
import numpy as np
import pytest
from conftest import write_mp4

from lipstream.avatar import bank
from lipstream.avatar.package import load_package
from lipstream.avatar.prepare import prepare
from lipstream.errors import NotSupportedError
from lipstream.face import align
from lipstream.face.landmarks import track_faces
from lipstream.face.mouth import measure_mouth
from lipstream.motion.params import MouthTrack, params_from_measures
from lipstream.render.bank import JUMP_SPAN, BankRenderer
from lipstream.render.warp import WarpRenderer

FPS = 25
SIZE = 256


def _track(jaw: np.ndarray, spread: np.ndarray) -> MouthTrack:
    return MouthTrack(np.stack([jaw, spread, np.zeros_like(jaw), np.clip(2 * jaw, 0, 1)], axis=-1), FPS)


@pytest.fixture(scope="module")
def talking(tmp_path_factory, default_avatar):
    """A 2.4 s video avatar: the portrait warped to open and close its mouth (1.25 Hz) and spread it (0.45 Hz)."""
    t = np.arange(60) / FPS
    track = _track(0.5 - 0.5 * np.cos(2 * np.pi * 1.25 * t), 0.5 * np.sin(2 * np.pi * 0.45 * t))
    rendered = WarpRenderer(default_avatar, still=True).render(track)
    frames = [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in rendered]
    folder = tmp_path_factory.mktemp("bank")
    return load_package(prepare(write_mp4(folder / "talking.mp4", frames, FPS), folder / "talking"))


@pytest.fixture(scope="module")
def request_track():
    """4 s asking for openings at another rhythm than the footage's, with a closed pause."""
    t = np.arange(100) / FPS
    jaw = np.clip(0.55 + 0.5 * np.sin(2 * np.pi * 0.8 * t + 1.0), 0, 1)
    jaw[40:55] = 0.0
    return _track(jaw, 0.3 * np.cos(2 * np.pi * 0.3 * t))


def _jumps(renderer: BankRenderer, plan: np.ndarray, n: int) -> int:
    """Steps where the chosen source frame does not move on with the footage."""
    bases = np.array([renderer.idle.source_index(k) for k in range(n)])
    return int((np.abs(np.diff(renderer.source[plan]) - np.diff(bases)) > JUMP_SPAN).sum())


def test_bank_contents(talking):
    b = talking.bank
    n, m = talking.frame_count, len(b["source"])
    width, height = bank.PATCH_SIZE
    assert b["patches"].shape == (m, height, width, 3) and b["patches"].dtype == np.uint8
    assert b["params"].shape == (m, 4) and b["lips"].shape == (m, 40, 2)
    assert b["frame_transform"].shape == (n, 2, 3) and b["frame_colour"].shape == (n, 3)
    assert b["frame_mask"].shape == (n, height // bank.MASK_SCALE, width // bank.MASK_SCALE)
    assert n // 3 <= m <= n
    assert (np.diff(b["source"]) > 0).all() and 0 <= b["source"][0] and b["source"][-1] < n
    # The footage's openings and spreads are all there.
    assert b["params"][:, 0].min() < 0.15 and b["params"][:, 0].max() > 0.6
    assert np.ptp(b["params"][:, 1]) > 0.5
    # Lips sit in the upper middle of the patch; masks fade to zero at the border.
    lips = b["lips"].reshape(-1, 2)
    assert (lips[:, 0] > 0.2 * width).all() and (lips[:, 0] < 0.8 * width).all()
    assert (lips[:, 1] > 0.1 * height).all() and (lips[:, 1] < 0.6 * height).all()
    masks = np.asarray(b["frame_mask"])
    assert masks.max() == 255 and masks[:, 0].max() == 0 and masks[:, -1].max() == 0
    # Skin colour is a plausible skin tone (red above blue).
    assert (b["frame_colour"][:, 0] > b["frame_colour"][:, 2]).all()


def test_canonical_patch_removes_head_motion(talking):
    frame, landmarks = np.asarray(talking.frames[0]), np.asarray(talking.landmarks[0])
    moved = np.array([[0.9 * np.cos(0.15), -0.9 * np.sin(0.15), 30.0], [0.9 * np.sin(0.15), 0.9 * np.cos(0.15), -10.0]])
    moved_frame = cv2.warpAffine(frame, moved, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    template = talking.bank["template"]
    patch = bank.canonical_patch(frame, align.to_canonical(landmarks, template))
    moved_patch = bank.canonical_patch(moved_frame, align.to_canonical(align.apply(moved, landmarks), template))
    assert np.abs(patch.astype(int) - moved_patch).mean() < 6


def test_offline_render_opens_the_mouth_as_asked(talking, request_track):
    renderer = BankRenderer(talking)
    plan = renderer.plan(request_track)
    chosen = talking.bank["params"][plan, 0]
    assert np.corrcoef(chosen, request_track.jaw_open)[0, 1] > 0.9
    frames = list(renderer.render(request_track))
    assert len(frames) == len(request_track)
    assert frames[0].shape == (SIZE, SIZE, 3) and frames[0].dtype == np.uint8
    aperture = measure_mouth(track_faces(frames)).aperture
    assert np.corrcoef(aperture, request_track.jaw_open)[0, 1] > 0.8
    assert np.nanmax(aperture[42:53]) < 0.05  # closed through the pause


def test_streaming_render_opens_the_mouth_as_asked(talking, request_track):
    renderer = BankRenderer(talking)
    frames = [renderer.render_frame(k, request_track.values[k]) for k in range(len(request_track))]
    aperture = measure_mouth(track_faces(frames)).aperture
    assert np.corrcoef(aperture, request_track.jaw_open)[0, 1] > 0.8


def test_jump_cost_reduces_switching(talking, request_track):
    noisy = MouthTrack(request_track.values + np.random.default_rng(0).normal(0, 0.08, request_track.values.shape), FPS)
    free = BankRenderer(talking, jump_cost=0.0)
    costly = BankRenderer(talking)
    free_plan, costly_plan = free.plan(noisy), costly.plan(noisy)
    assert _jumps(costly, costly_plan, len(noisy)) < 0.6 * _jumps(free, free_plan, len(noisy))
    assert np.corrcoef(talking.bank["params"][costly_plan, 0], request_track.jaw_open)[0, 1] > 0.85


def test_footage_asked_for_its_own_mouth_shows_it(talking):
    measures = measure_mouth(talking.landmarks)
    own = params_from_measures(measures.aperture, measures.width / talking.manifest["neutral_mouth_width"])
    track = MouthTrack(own, FPS)
    renderer = BankRenderer(talking)
    plan = renderer.plan(track)
    near = np.abs(renderer.source[plan] - np.arange(len(track))) <= JUMP_SPAN
    assert near.mean() > 0.9
    frames = list(renderer.render(track))
    error = [np.abs(frames[k].astype(int) - talking.frames[k]).mean() for k in np.flatnonzero(near)]
    assert np.median(error) < 2.0


def test_only_the_lower_face_changes(talking, request_track):
    renderer = BankRenderer(talking)
    frame = renderer.render_frame(0, request_track.values[0])
    eyes_y = int(np.asarray(talking.landmarks[0])[[33, 263], 1].max())
    assert np.array_equal(frame[: eyes_y + 5], talking.frames[0][: eyes_y + 5])


def test_photo_avatar_is_refused(default_avatar):
    with pytest.raises(NotSupportedError, match="warp"):
        BankRenderer(default_avatar)
