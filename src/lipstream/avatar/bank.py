"""The mouth bank: the avatar's own lower faces, aligned to one canonical pose, with their shapes.

`build_bank` warps the lower face (nose base, mouth, lips, chin) of each source frame into a
fixed canonical patch, with head motion removed by a similarity fit to the stable upper-face
landmarks (lipstream.face.align). The `bank` renderer picks patches by mouth parameters and
warps them back onto a base frame's pose.

Canonical patch pixels: PX_PER_EYE pixels per outer-eye-corner distance, PATCH_SIZE (width,
height), the mouth centred horizontally. Arrays (N = source frames, M = bank entries, K =
len(align.STABLE_POINTS), P = len(POSE_POINTS)):

    template         (K, 2) float32   canonical pixel position of each of align.STABLE_POINTS
    frame_transform  (N, 2, 3) float32 similarity from frame pixels to canonical pixels
    frame_pose       (N, P, 2) float32 POSE_POINTS after alignment minus their mean over the
                                       frames, in eye distances: they stand out of the stable
                                       points' plane, so they shift with yaw and pitch
    frame_anchor     (N, 2) float32    canonical pixel position of the cheeks (ANCHOR_POINTS):
                                       where the lower face sits once the eyes are aligned
    frame_mask       (N, h, w) uint8   soft lower-face mask in canonical space at 1/MASK_SCALE
                                       resolution (255 = replace), zero at the patch border
    frame_colour     (N, 3) float32    mean RGB of the lower-face skin (lips excluded)
    source           (M,) int32        source frame of each entry, increasing
    patches          (M, H, W, 3) uint8 RGB canonical patches
    params           (M, 4) float32    measured mouth parameters (motion.params order)
    lips             (M, 40, 2) float32 canonical pixel positions of face.mouth.LIP_INDICES
"""

from __future__ import annotations

import cv2
import numpy as np

from lipstream.avatar.package import release_row
from lipstream.face import align
from lipstream.face.mouth import LIP_INDICES, MOUTH_CORNERS, OUTER_LOWER, OUTER_UPPER, measure_mouth
from lipstream.face.region import SUBNASALE
from lipstream.motion.params import params_from_measures

PX_PER_EYE = 128
PATCH_SIZE = (256, 224)  # width, height in canonical pixels: 2.0 x 1.75 eye distances
PATCH_TOP_ABOVE_SUBNASALE = 0.25  # eye distances
# Nose tip, subnasale, nostril wings, cheeks: their canonical positions describe the head pose.
POSE_POINTS = (1, 2, 98, 327, 205, 425)
# Cheekbone points at about the depth of the mouth corners: aligning them between two frames
# removes most of the mouth's parallax left after the eye alignment (on a clip with head
# turns, mouth position steps at switches between frames fell from 0.035 to 0.022 eye distances).
ANCHOR_POINTS = (36, 266, 205, 425)
MASK_SCALE = 4
# The mask (eye distances, see _mask): top edge under the nose, sides limited, grown sideways
# and down (room for an opening jaw), feathered.
LOWER_JAW = (58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288)
MASK_TOP_BELOW_SUBNASALE = 0.06
MASK_SIDE = 0.25
MASK_SIDE_SHARE = 0.6
MASK_GROW_SIDE = 0.03
MASK_GROW_DOWN = 0.2
MASK_FEATHER = 0.05
# Skin for colour statistics excludes the lips grown by this many eye distances.
LIP_CLEARANCE = 0.08
# Consecutive frames whose lips moved less than this (eye distances, mean over lip points) are
# near-duplicates of the last kept entry, unless that entry is DUPLICATE_SPAN frames back.
DUPLICATE_MOTION = 0.01
DUPLICATE_SPAN = 6
MAX_ENTRIES = 1500


def build_bank(frames: np.ndarray, landmarks: np.ndarray, entries: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The mouth bank of a video avatar (see the module docstring for the arrays).

    frames: (N, H, W, 3) uint8 RGB, usually a memory map (read one frame at a time);
    landmarks: (N, 478, 2) float32 pixels, smoothed, no gaps. entries: indices of the frames that
    may become bank entries (default all; held-out tests pass the training part). Near-duplicate
    frames are dropped and at most MAX_ENTRIES kept.
    """
    landmarks = np.asarray(landmarks, np.float32)
    n = len(landmarks)
    template = _template(landmarks)
    transforms = align.to_canonical(landmarks, template)
    canonical = align.apply(transforms, landmarks).astype(np.float32)
    pose = canonical[:, POSE_POINTS] / PX_PER_EYE
    pose -= pose.mean(axis=0)

    measures = measure_mouth(landmarks)
    params = params_from_measures(measures.aperture, measures.width / np.median(measures.width))
    lips = canonical[:, LIP_INDICES]
    chosen = _pick_entries(lips, np.arange(n) if entries is None else np.asarray(entries))

    width, height = PATCH_SIZE
    patches = np.empty((len(chosen), height, width, 3), np.uint8)
    masks = np.empty((n, height // MASK_SCALE, width // MASK_SCALE), np.uint8)
    colours = np.empty((n, 3), np.float32)
    slot = {int(i): s for s, i in enumerate(chosen)}
    for i in range(n):
        patch = canonical_patch(frames[i], transforms[i])
        release_row(frames, i)
        masks[i] = _mask(canonical[i])
        colours[i] = _skin_colour(patch, masks[i], canonical[i])
        if i in slot:
            patches[slot[i]] = patch
    return {
        "template": template,
        "frame_transform": transforms.astype(np.float32),
        "frame_pose": pose.astype(np.float32),
        "frame_anchor": canonical[:, ANCHOR_POINTS].mean(axis=1),
        "frame_mask": masks,
        "frame_colour": colours,
        "source": chosen.astype(np.int32),
        "patches": patches,
        "params": params[chosen],
        "lips": lips[chosen],
    }


def canonical_patch(frame: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The (H, W, 3) uint8 canonical patch of an RGB frame under a frame-to-canonical transform (2, 3)."""
    width, height = PATCH_SIZE
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    footprint = align.apply(align.invert(transform), corners)
    x0, y0 = np.maximum(np.floor(footprint.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.ceil(footprint.max(axis=0)).astype(int) + 2
    crop = np.asarray(frame[y0:y1, x0:x1])
    scale = float(align.scale_of(transform))
    if scale < 0.8:  # shrinking: low-pass first so fine texture does not alias
        crop = cv2.GaussianBlur(crop, (0, 0), 0.5 * np.sqrt(1 / scale**2 - 1))
    shifted = np.array(transform, np.float64)
    shifted[:, 2] += shifted[:, :2] @ [x0, y0]
    return cv2.warpAffine(crop, shifted, PATCH_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _template(landmarks: np.ndarray) -> np.ndarray:
    """Canonical pixel positions of the stable points: mouth centred, patch top above the nose base."""
    shape = align.mean_stable_shape(landmarks)
    mean_face = align.apply(align.to_canonical(landmarks, shape), landmarks).mean(axis=0)
    centre_x = mean_face[list(MOUTH_CORNERS), 0].mean()
    top_y = mean_face[SUBNASALE, 1] - PATCH_TOP_ABOVE_SUBNASALE
    return ((shape - [centre_x, top_y]) * PX_PER_EYE + [PATCH_SIZE[0] / 2, 0]).astype(np.float32)


def _pick_entries(lips: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Indices of the candidate frames to keep: near-duplicates dropped, at most MAX_ENTRIES."""
    kept = [int(candidates[0])]
    for i in candidates[1:]:
        motion = np.linalg.norm(lips[i] - lips[kept[-1]], axis=-1).mean() / PX_PER_EYE
        if motion >= DUPLICATE_MOTION or i - kept[-1] >= DUPLICATE_SPAN:
            kept.append(int(i))
    kept = np.array(kept)
    if len(kept) > MAX_ENTRIES:
        kept = kept[np.linspace(0, len(kept) - 1, MAX_ENTRIES).round().astype(int)]
    return kept


def _mask(canonical_landmarks: np.ndarray) -> np.ndarray:
    """Soft lower-face mask (h, w) uint8 at 1/MASK_SCALE of the patch, from canonical landmarks.

    It covers mouth and chin from just under the nose to below the chin; at the sides it reaches
    MASK_SIDE beyond the mouth corners but at most MASK_SIDE_SHARE of the way to the face's
    outline, where pose differences between frames would show.
    """
    width, height = PATCH_SIZE[0] // MASK_SCALE, PATCH_SIZE[1] // MASK_SCALE
    eye_px = PX_PER_EYE / MASK_SCALE
    lm = canonical_landmarks / MASK_SCALE
    left, right = np.sort(lm[list(MOUTH_CORNERS), 0])
    jaw = lm[list(LOWER_JAW)]
    side = MASK_SIDE * eye_px
    jaw[:, 0] = np.where(jaw[:, 0] < left, left - np.minimum(side, MASK_SIDE_SHARE * (left - jaw[:, 0])), jaw[:, 0])
    jaw[:, 0] = np.where(jaw[:, 0] > right, right + np.minimum(side, MASK_SIDE_SHARE * (jaw[:, 0] - right)), jaw[:, 0])
    top_y = lm[SUBNASALE, 1] + MASK_TOP_BELOW_SUBNASALE * eye_px
    polygon = np.vstack([[jaw[0, 0], top_y], jaw, [jaw[-1, 0], top_y]])
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255)
    grow = (max(int(round(MASK_GROW_SIDE * eye_px)), 1), max(int(round(MASK_GROW_DOWN * eye_px)), 1))
    kernel = np.zeros((2 * grow[1] + 1, 2 * grow[0] + 1), np.uint8)
    # Only the kernel's upper half: dilation then grows sideways and down, never up into the nose.
    kernel[: grow[1] + 1] = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow[0] + 1, grow[1] + 1))
    mask = cv2.dilate(mask, kernel)
    feather = MASK_FEATHER * eye_px
    inner = int(np.ceil(2 * feather))  # keep the fade inside the patch
    mask[:inner], mask[-inner:], mask[:, :inner], mask[:, -inner:] = 0, 0, 0, 0
    return cv2.GaussianBlur(mask, (0, 0), feather)


def _skin_colour(patch: np.ndarray, mask: np.ndarray, canonical_landmarks: np.ndarray) -> np.ndarray:
    """Mean RGB (3,) float32 of the patch where the mask is mostly on, lips and mouth excluded."""
    height, width = patch.shape[:2]
    skin = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) > 192
    lips = np.zeros((height, width), np.uint8)
    outline = canonical_landmarks[list(OUTER_UPPER) + list(OUTER_LOWER[::-1])]
    cv2.fillPoly(lips, [np.round(outline).astype(np.int32)], 1)
    clearance = int(round(LIP_CLEARANCE * PX_PER_EYE))
    lips = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * clearance + 1,) * 2))
    skin = (skin & (lips == 0)).astype(np.uint8)
    if skin.sum() < 16:
        return patch.reshape(-1, 3).mean(axis=0).astype(np.float32)
    return np.array(cv2.mean(patch, mask=skin)[:3], np.float32)
