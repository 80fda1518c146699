"""Life for a still photo: natural blinks and a slight head sway, deterministic in the frame index.

Blinks come every BLINK_INTERVAL_S (seeded), each about 160 ms, the closed moment on a frame:
the upper eyelid is warped down onto the lower one (face-mesh eye contours, the skin above
stretching with it). The sway is a small rotation about the neck plus a shift, each a sum of
slow sines with seeded frequencies and phases; it moves the head and fades out over the
shoulders and background, so the frame border never shows. Landmarks move with the pixels.
"""

from __future__ import annotations

import bisect

import cv2
import numpy as np

from lipstream.face.mouth import EYE_OUTER_CORNERS
from lipstream.render.mesh_warp import MeshWarp, border_points, soften_seams, triangulate

# Face-mesh eye contours, image-left eye then image-right eye, outer to inner corner.
EYE_CORNERS = ((33, 133), (263, 362))
UPPER_LIDS = ((246, 161, 160, 159, 158, 157, 173), (466, 388, 387, 386, 385, 384, 398))
LOWER_LIDS = ((7, 163, 144, 145, 153, 154, 155), (249, 390, 373, 374, 380, 381, 382))
CREASES = ((247, 30, 29, 27, 28, 56, 190), (467, 260, 259, 257, 258, 286, 414))
ABOVE_CREASES = ((113, 225, 224, 223, 222, 221, 189), (342, 445, 444, 443, 442, 441, 413))
BELOW_EYES = ((130, 25, 110, 24, 23, 22, 26, 112, 243), (359, 255, 339, 254, 253, 252, 256, 341, 463))

N_FACE_MESH = 468  # face-mesh points; the iris points follow

BLINK_INTERVAL_S = (2.0, 6.0)
FIRST_BLINK_S = (0.8, 2.5)
BLINK_CLOSING_S, BLINK_HOLD_S, BLINK_OPENING_S = 0.06, 0.02, 0.08
LIDS_MEET = 0.3  # where the lids meet, from the lower lid (0) to the upper one (1)
# How far the skin above the lid follows it down (the crease, and the ring above it), so a
# closed lid shows stretched lid skin with the lashes at its edge, not a smear of lashes.
CREASE_FOLLOW, ABOVE_CREASE_FOLLOW = 0.7, 0.3
EYE_BOX_MARGIN = 0.1  # eye distances around the eye points

SWAY_DEGREES = 1.2  # largest rotation
SWAY_SHIFT = 0.012  # largest shift, fraction of the face height
SWAY_HZ = (0.07, 0.3)
SWAY_SINES = 3
HEAD_FADE = (1.0, 1.7)
SWAY_STEP = 4  # pixels between the samples of the sway's displacement field  # head ellipse radii (normalised) where the sway starts and ends fading


class Life:
    """Blinks and sway for a photo: frame_shape (H, W, ...), landmarks (478, 2) float32 px."""

    def __init__(self, frame_shape: tuple[int, ...], landmarks: np.ndarray, fps: float, seed: int = 0,
                 blinks: bool = True, sway: bool = True):
        self.fps = float(fps)
        self.blinks, self.sway = blinks, sway
        self.landmarks = np.asarray(landmarks, np.float32)
        rng = np.random.default_rng([seed, 1])
        self._peaks: list[int] = []
        self._next_blink_s = float(rng.uniform(*FIRST_BLINK_S))
        self._blink_rng = rng
        self._build_eyes(frame_shape)
        self._build_sway(frame_shape, np.random.default_rng([seed, 2]))

    # -- blinks --------------------------------------------------------------------------------

    def blink_amount(self, k: int) -> float:
        """Eyelid closure at frame k: 0 open .. 1 closed."""
        if not self.blinks:
            return 0.0
        while not self._peaks or self._peaks[-1] < k + self.fps:
            self._peaks.append(int(round((self._next_blink_s + BLINK_CLOSING_S) * self.fps)))
            self._next_blink_s += float(self._blink_rng.uniform(*BLINK_INTERVAL_S))
        j = bisect.bisect_left(self._peaks, k)
        nearest = min(self._peaks[max(j - 1, 0) : j + 1], key=lambda p: abs(p - k))
        dt = (k - nearest) / self.fps
        if -BLINK_CLOSING_S < dt <= 0:
            return float(_smoothstep((dt + BLINK_CLOSING_S) / BLINK_CLOSING_S))
        if 0 < dt <= BLINK_HOLD_S:
            return 1.0
        if BLINK_HOLD_S < dt < BLINK_HOLD_S + BLINK_OPENING_S:
            return float(1.0 - _smoothstep((dt - BLINK_HOLD_S) / BLINK_OPENING_S))
        return 0.0

    def _build_eyes(self, frame_shape: tuple[int, ...]) -> None:
        lm = self.landmarks
        eye = float(np.linalg.norm(lm[EYE_OUTER_CORNERS[0]] - lm[EYE_OUTER_CORNERS[1]]))
        groups = (EYE_CORNERS, UPPER_LIDS, LOWER_LIDS, CREASES, ABOVE_CREASES, BELOW_EYES)
        self._eye_points = np.array([i for group in groups for side in group for i in side])
        pts = lm[self._eye_points].astype(np.float64)
        margin = EYE_BOX_MARGIN * eye
        x0, y0 = np.floor(pts.min(axis=0) - margin).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0) + margin).astype(int)
        box = np.array([max(x0, 0), max(y0, 0), min(x1, frame_shape[1]), min(y1, frame_shape[0])], np.int32)
        border = border_points(box, 0.25 * eye)
        src = np.vstack([pts, border])
        self._eye_warp = MeshWarp(src, triangulate(src), box)
        self._eye_border = border
        upper = np.array(UPPER_LIDS).ravel()
        lower = np.array(LOWER_LIDS).ravel()
        meet = lm[lower] + LIDS_MEET * (lm[upper] - lm[lower])
        # Displacements at full closure, per landmark index.
        self._closing = {int(i): d for i, d in zip(upper, meet - lm[upper])}
        self._closing.update({int(i): d for i, d in zip(lower, meet - lm[lower])})
        for ring, follow in ((CREASES, CREASE_FOLLOW), (ABOVE_CREASES, ABOVE_CREASE_FOLLOW)):
            self._closing.update({int(c): follow * (meet[j] - lm[u])
                                  for j, (c, u) in enumerate(zip(np.array(ring).ravel(), upper))})
        self._closing_idx = np.array(sorted(self._closing))
        self._closing_vec = np.array([self._closing[i] for i in self._closing_idx], np.float32)

    def _blink_landmarks(self, landmarks: np.ndarray, amount: float) -> np.ndarray:
        out = np.array(landmarks, np.float32, copy=True)
        out[self._closing_idx] += amount * self._closing_vec
        return out

    def _blink(self, frame: np.ndarray, amount: float) -> np.ndarray:
        closed = self._blink_landmarks(self.landmarks, amount)
        map_x, map_y = self._eye_warp.maps(np.vstack([closed[self._eye_points], self._eye_border]))
        x0, y0, x1, y1 = (int(v) for v in self._eye_warp.box)
        region = cv2.remap(np.ascontiguousarray(frame[y0:y1, x0:x1]), map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        lids = [closed[[c[0], *u, c[1]]] - [x0, y0] for c, u in zip(EYE_CORNERS, UPPER_LIDS)]
        soften_seams(region, lids, amount)
        out = np.array(frame, copy=True)
        out[y0:y1, x0:x1] = region
        return out

    # -- sway ----------------------------------------------------------------------------------

    def pose(self, k: int) -> np.ndarray:
        """Forward (2, 3) affine moving the head from the photo to frame k (pixels)."""
        if not self.sway:
            return np.array([[1.0, 0, 0], [0, 1.0, 0]])
        t = k / self.fps
        waves = self._amplitudes * np.sin(2 * np.pi * self._freqs * t + self._phases)  # (3, SINES)
        angle, dx, dy = waves.sum(axis=1)
        rot = cv2.getRotationMatrix2D(tuple(float(v) for v in self._pivot), float(angle), 1.0)
        rot[:, 2] += [dx, dy]
        return rot

    def _build_sway(self, frame_shape: tuple[int, ...], rng: np.random.Generator) -> None:
        lm = self.landmarks[:N_FACE_MESH]
        (fx0, fy0), (fx1, fy1) = lm.min(axis=0), lm.max(axis=0)
        face_w, face_h = fx1 - fx0, fy1 - fy0
        self._pivot = np.array([(fx0 + fx1) / 2, fy1 + 0.25 * face_h])
        self._freqs = rng.uniform(*SWAY_HZ, size=(3, SWAY_SINES))
        self._phases = rng.uniform(0, 2 * np.pi, size=(3, SWAY_SINES))
        weights = rng.uniform(0.5, 1.0, size=(3, SWAY_SINES))
        limits = np.array([SWAY_DEGREES, SWAY_SHIFT * face_h, SWAY_SHIFT * face_h])[:, None]
        self._amplitudes = weights / weights.sum(axis=1, keepdims=True) * limits
        h, w = frame_shape[:2]
        centre = np.array([(fx0 + fx1) / 2, fy0 + 0.45 * face_h])
        radii = np.array([0.85 * face_w, 0.85 * face_h])

        def head_weight(xs, ys):
            r = np.sqrt(((xs - centre[0]) / radii[0]) ** 2 + ((ys - centre[1]) / radii[1]) ** 2)
            return (1 - _smoothstep((r - HEAD_FADE[0]) / (HEAD_FADE[1] - HEAD_FADE[0]))).astype(np.float32)

        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self._weight = head_weight(xs, ys)
        rows, cols = np.nonzero(self._weight > 1e-3)
        self._sway_box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) if len(rows) else (0, 0, w, h)
        x0, y0, x1, y1 = self._sway_box
        self._grid = xs[y0:y1, x0:x1], ys[y0:y1, x0:x1]
        # The displacement is smooth, so it is computed on a grid SWAY_STEP times coarser and
        # upsampled: coarse sample j sits where cv2.resize puts it, at x0 + (j + 0.5) * step - 0.5.
        n_x, n_y = -(-(x1 - x0) // SWAY_STEP), -(-(y1 - y0) // SWAY_STEP)
        coarse_x, coarse_y = np.meshgrid(x0 + (np.arange(n_x) + 0.5) * SWAY_STEP - 0.5,
                                         y0 + (np.arange(n_y) + 0.5) * SWAY_STEP - 0.5)
        self._coarse_w = head_weight(coarse_x, coarse_y)
        self._coarse_wx = (self._coarse_w * coarse_x).astype(np.float32)
        self._coarse_wy = (self._coarse_w * coarse_y).astype(np.float32)

    def _sway(self, frame: np.ndarray, k: int) -> np.ndarray:
        inverse = cv2.invertAffineTransform(self.pose(k)) - [[1, 0, 0], [0, 1, 0]]
        x0, y0, x1, y1 = self._sway_box
        up = (self._coarse_w.shape[1] * SWAY_STEP, self._coarse_w.shape[0] * SWAY_STEP)
        maps = []
        for grid, (a, b, c) in zip(self._grid, inverse):
            # displacement = weight * (inverse - identity)(x, y), then map = grid + displacement
            coarse = float(a) * self._coarse_wx + float(b) * self._coarse_wy + float(c) * self._coarse_w
            shift = cv2.resize(coarse, up, interpolation=cv2.INTER_LINEAR)[: y1 - y0, : x1 - x0]
            maps.append(cv2.add(grid, shift))
        out = np.array(frame, copy=True)
        out[y0:y1, x0:x1] = cv2.remap(frame, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return out

    # -- both ----------------------------------------------------------------------------------

    def apply(self, k: int, frame: np.ndarray) -> np.ndarray:
        """Frame (H, W, 3) uint8 RGB of the photo with frame k's blink and sway; a new array."""
        amount = self.blink_amount(k)
        out = self._blink(frame, amount) if amount > 0 else frame
        return self._sway(out, k) if self.sway else np.array(out, copy=True)

    def move_landmarks(self, k: int, landmarks: np.ndarray) -> np.ndarray:
        """Landmarks (N, 2) px of the photo moved as `apply` moves the pixels of frame k."""
        pts = self._blink_landmarks(landmarks, self.blink_amount(k))
        if not self.sway:
            return pts
        h, w = self._weight.shape
        xi = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
        weight = self._weight[yi, xi][:, None]
        pose = self.pose(k)
        moved = pts @ pose[:, :2].T + pose[:, 2]
        return (pts + weight * (moved - pts)).astype(np.float32)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
