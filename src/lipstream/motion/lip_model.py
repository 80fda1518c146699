"""The lip model: mouth parameters -> the lip, jaw and lower-face landmarks of one face, and back.

A `LipModel` is built from one face's landmarks (the *neutral*: a photo, or one video frame).
It works in a mouth-aligned frame: origin at the midpoint of the mouth corners (61, 291), u
along the corners towards the image-right one, v perpendicular to it pointing down the face,
unit = the outer-eye-corner distance (the same unit `measure_mouth` uses).

`shape(params)` returns all 478 landmarks in pixels with the lips (the 40 `LIP_INDICES`), the
jaw line and the free lower-face mesh points moved; every other point stays where it was.

- Rest (params all 0) is the neutral with its lips closed: the inner-lip pairs meet on one
  line, the upper lip taking `UPPER_SHARE_CLOSING` of the gap. A neutral with parted lips (a
  smile showing teeth) is closed this way; jaw_open = 0 always means lips together.
- jaw_open: the inner lips part by `aperture_from_jaw_open(jaw_open * (1 - lip_close))` at the
  three central pairs `measure_mouth` uses, with an elliptical profile towards the corners;
  the upper lip takes `UPPER_SHARE_OPENING` of it, the lower lip the rest, the chin and jaw
  line follow the lower lip (`CHIN_FOLLOW`).
- lip_spread: the lips scale along u so the corner distance is WIDTH_AT_ROUNDED..WIDTH_AT_SPREAD
  times the neutral width; spread lips thin and lift their corners a little, rounded lips
  thicken (protrude, most at the corners) and open rounder (a flatter opening profile). At
  jaw_open = 0 rounded lips are pursed and closed, so the aperture contract holds exactly.
- lip_close: lips pressed together: aperture 0 and vermilion thinned.
- teeth: no effect on landmarks (the renderer shows them inside the opening).

So `measure_mouth(shape(p)).aperture == aperture_from_jaw_open(p[0] * (1 - p[2]))` and its
width == neutral width * the width ratio of lip_spread, exactly. `fit(landmarks)` inverts it by
least squares over the 40 lip points.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from lipstream.face.mouth import (
    APERTURE_PAIRS,
    EYE_OUTER_CORNERS,
    INNER_LOWER,
    INNER_UPPER,
    JAW_LINE,
    MOUTH_CORNERS,
    OUTER_LOWER,
    OUTER_UPPER,
)
from lipstream.face.region import SUBNASALE
from lipstream.motion.params import (
    APERTURE_AT_FULL_OPEN,
    JAW_OPEN,
    LIP_CLOSE,
    LIP_SPREAD,
    WIDTH_AT_ROUNDED,
    WIDTH_AT_SPREAD,
    clip_params,
)

# Control points, in this order: outer upper lip (11, corner to corner), outer lower lip
# (9, corners excluded), inner upper lip (11), inner lower lip (9), jaw line (21).
LIP_CONTROLS = OUTER_UPPER + OUTER_LOWER[1:-1] + INNER_UPPER + INNER_LOWER[1:-1]
CONTROLS = LIP_CONTROLS + JAW_LINE
N_LIPS = len(LIP_CONTROLS)
_OU, _OL, _IU, _IL = slice(0, 11), slice(11, 20), slice(20, 31), slice(31, 40)
_CORNERS = [0, 10, 20, 30]  # outer left, outer right, inner left, inner right
_OUTER_LOWER_WITH_CORNERS = np.r_[0, np.arange(_OL.start, _OL.stop), 10]
_INNER_LOWER_WITH_CORNERS = np.r_[20, np.arange(_IL.start, _IL.stop), 30]
# Points that don't move with the mouth, used to align other frames of the same face in `fit`.
STABLE_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1)

UPPER_SHARE_CLOSING = 0.35  # share of a parted neutral's gap the upper lip closes
UPPER_SHARE_OPENING = 0.15  # share of the opening taken by the upper lip moving up
CHIN_FOLLOW = 0.6  # chin drop / lower-lip drop when the jaw opens (unless limited, see LipModel)
CHIN_FOLLOW_CLOSING = 0.5  # the same when closing a parted neutral
PROFILE_NEUTRAL, PROFILE_ROUNDED, PROFILE_SPREAD = 0.8, 0.5, 1.2  # opening profile exponents
THIN_AT_SPREAD = 0.25  # vermilion thickness lost at lip_spread = +1
THICK_AT_ROUNDED = 0.30  # gained at lip_spread = -1 (twice that at the corners)
THIN_AT_CLOSE = 0.25  # lost at lip_close = 1
CORNER_LIFT = 0.025  # eye distances the corners rise at lip_spread = +1
FIT_ITERATIONS = 12
N_FACE_MESH = 468  # face-mesh points; the iris points after them never move with the mouth


class LipModel:
    """Lip model of one face; see the module docstring.

    landmarks: (478, 2) float32 pixels of the neutral face. neutral_width: mouth-corner distance
    / eye distance that lip_spread = 0 stands for (the avatar's `neutral_mouth_width`); default:
    this face's own width. chin_drop_limit: the most the chin may drop at jaw_open = 1, in eye
    distances (a renderer whose region ends close below the chin lowers CHIN_FOLLOW with it).
    """

    def __init__(self, landmarks: np.ndarray, neutral_width: float | None = None,
                 chin_drop_limit: float | None = None):
        lm = np.asarray(landmarks, np.float64)
        self.landmarks = np.asarray(landmarks, np.float32)
        left, right = lm[MOUTH_CORNERS[0]], lm[MOUTH_CORNERS[1]]
        self.eye_px = float(np.linalg.norm(lm[EYE_OUTER_CORNERS[1]] - lm[EYE_OUTER_CORNERS[0]]))
        self.origin = (left + right) / 2
        ux = (right - left) / np.linalg.norm(right - left)
        self.axes = np.array([ux, [-ux[1], ux[0]]])  # rows: u and v directions in pixels
        local = self.to_local(lm)
        self._local_all = local
        self._controls_idx = np.array(CONTROLS)
        self.half_width = float(local[MOUTH_CORNERS[1], 0])
        self.neutral_width = float(neutral_width) if neutral_width else 2 * self.half_width
        full_drop = (1 - UPPER_SHARE_OPENING) * APERTURE_AT_FULL_OPEN
        self.chin_follow = CHIN_FOLLOW
        if chin_drop_limit is not None:
            self.chin_follow = min(CHIN_FOLLOW, max(chin_drop_limit, 0.0) / full_drop)
        self._stable_px = lm[list(STABLE_POINTS)]
        self._build_rest(local[list(CONTROLS)])
        self._free: np.ndarray | None = None  # the free points' weights, built on first use (`shape`)

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, neutral_width: float | None = None,
                       chin_drop_limit: float | None = None) -> "LipModel":
        return cls(landmarks, neutral_width, chin_drop_limit)

    # -- frames of reference -------------------------------------------------------------------

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Pixel points (..., 2) -> mouth-frame points (..., 2) in eye distances."""
        return (np.asarray(points, np.float64) - self.origin) @ self.axes.T / self.eye_px

    def to_pixels(self, local: np.ndarray) -> np.ndarray:
        """Mouth-frame points (..., 2) in eye distances -> pixel points (..., 2) float64."""
        return local * self.eye_px @ self.axes + self.origin

    # -- the model ------------------------------------------------------------------------------

    def shape(self, params: np.ndarray) -> np.ndarray:
        """Landmarks (478, 2) float32 pixels for params (4,), or (T, 478, 2) for params (T, 4)."""
        p = clip_params(np.asarray(params, np.float32)).astype(np.float64)
        moved = self._moved_controls(p)
        if self._free is None:
            self._build_free(self._local_all)
        delta = moved - self._local_controls
        free = self._local_all[self._free] + np.einsum("fc,...cd->...fd", self._free_weights, delta)
        out = np.broadcast_to(self.landmarks, p.shape[:-1] + self.landmarks.shape).copy()
        out[..., self._controls_idx, :] = self.to_pixels(moved)
        out[..., self._free, :] = self.to_pixels(free)
        return out

    def controls(self, params: np.ndarray) -> np.ndarray:
        """The control points (61, 2) float32 pixels (`CONTROLS` order) for params (4,), or
        (T, 61, 2) for (T, 4): `shape(params)[..., CONTROLS, :]` without moving the other points
        (so without building their weights, most of a model's construction time)."""
        p = clip_params(np.asarray(params, np.float32)).astype(np.float64)
        return self.to_pixels(self._moved_controls(p)).astype(np.float32)

    def _moved_controls(self, p: np.ndarray) -> np.ndarray:
        """Control points (..., 61, 2) in the mouth frame for clipped params (..., 4) float64."""
        opening = p[..., JAW_OPEN] * (1 - p[..., LIP_CLOSE])
        return self._controls(opening, p[..., LIP_SPREAD], p[..., LIP_CLOSE])

    def lip_shape(self, params: np.ndarray) -> np.ndarray:
        """The 40 lip points in `LIP_CONTROLS` order, pixels (..., 40, 2) float32."""
        return self.shape(params)[..., list(LIP_CONTROLS), :]

    def _build_rest(self, neutral: np.ndarray) -> None:
        """Rest positions (neutral with the lips closed) and the per-point data the model needs."""
        self._local_controls = neutral.copy()
        upper, lower = neutral[_IU], neutral[_INNER_LOWER_WITH_CORNERS]
        pair_u = (upper[:, 0] + lower[:, 0]) / 2
        gap = lower[:, 1] - upper[:, 1]
        meet = upper[:, 1] + UPPER_SHARE_CLOSING * gap
        order = np.argsort(pair_u)
        self._meet_u, self._meet_v = pair_u[order], meet[order]
        rest = neutral.copy()
        gap_at = np.interp(rest[:N_LIPS, 0], pair_u[order], gap[order], left=0.0, right=0.0)
        rest[_OU, 1] += UPPER_SHARE_CLOSING * gap_at[_OU]
        rest[_OL, 1] -= (1 - UPPER_SHARE_CLOSING) * gap_at[_OL]
        rest[_IU] = np.stack([pair_u, meet], axis=1)
        rest[_IL] = rest[_IU][1:-1]
        self._jaw_weight = self._jaw_weights(neutral[N_LIPS:])
        central = np.array([INNER_UPPER.index(up) for up, _ in APERTURE_PAIRS])
        centre_gap = float(np.mean(gap[central]))
        rest[N_LIPS:, 1] -= CHIN_FOLLOW_CLOSING * (1 - UPPER_SHARE_CLOSING) * centre_gap * self._jaw_weight
        self._rest = rest
        lips = rest[:N_LIPS]
        self._is_upper = np.zeros(N_LIPS, bool)
        self._is_upper[_OU] = self._is_upper[_IU] = True
        self._is_upper[_CORNERS] = False  # corners belong to neither lip
        self._is_corner = np.zeros(N_LIPS, bool)
        self._is_corner[_CORNERS] = True
        self._meet_at = np.interp(lips[:, 0], self._meet_u, self._meet_v)
        # Position across the opening: -1 at the left inner corner, +1 at the right one.
        inner_left, inner_right = -rest[_IU.start, 0], rest[_IU.stop - 1, 0]
        self._across = np.where(lips[:, 0] < 0, lips[:, 0] / inner_left, lips[:, 0] / inner_right)
        self._across_sq = np.minimum(self._across**2, 1.0)
        self._corner_sq = np.minimum((lips[:, 0] / self.half_width) ** 2, 1.0)
        self._central = central + _IU.start  # the inner upper points measure_mouth's aperture uses

    def _jaw_weights(self, jaw: np.ndarray) -> np.ndarray:
        """How much each jaw-line point follows the chin: 0 at mouth-corner level, 1 at the chin."""
        chin_v = float(jaw[:, 1].max())
        return np.clip(jaw[:, 1] / chin_v, 0.0, 1.0) ** 1.5

    def _build_free(self, local: np.ndarray) -> None:
        """Weights (F, 61) moving the other lower-face mesh points with the control points.

        Mesh points on a lip (between its outer and inner contour) move with that lip, blended
        between its two contours. Skin under the lower lip moves linearly from the lip to the
        jaw line below it, so the stretch or squeeze between them is spread evenly. The other
        skin points are the harmonic interpolation (each the mean of its neighbours in a
        Delaunay graph) between all those and the still points around: unlike a spline it never
        overshoots, so no skin point overtakes a neighbour.
        """
        controls = set(CONTROLS)
        top = local[SUBNASALE, 1]
        jaw = local[list(JAW_LINE)]
        inside = (local[:, 1] > top + 0.02) & (local[:, 1] < jaw[:, 1].max())
        inside &= (local[:, 0] > jaw[:, 0].min()) & (local[:, 0] < jaw[:, 0].max())
        free = [i for i in np.flatnonzero(inside) if i not in controls]
        # Points whose motion follows directly from the controls: on a lip, or under the lower lip.
        attached = {}
        for i in free:
            weights = self._on_lip_weights(local, i)
            weights = self._below_lip_weights(local, i) if weights is None else weights
            if weights is not None:
                attached[i] = weights
        skin = [i for i in free if i not in attached]
        near = np.linalg.norm(local[:N_FACE_MESH], axis=1) < 1.3
        moving = controls | set(free)
        still = [i for i in np.flatnonzero(near) if i not in moving]
        # Known displacements, as weights over the controls: controls, attached points, still points.
        known = list(CONTROLS) + list(attached) + still
        known_weights = np.vstack([np.eye(len(CONTROLS))] + [w[None] for w in attached.values()]
                                  + [np.zeros((len(still), len(CONTROLS)))])
        nodes = skin + known
        adjacency = np.zeros((len(nodes), len(nodes)))
        for simplex in Delaunay(local[nodes]).simplices:
            for a, b in ((0, 1), (1, 2), (2, 0)):
                adjacency[simplex[a], simplex[b]] = adjacency[simplex[b], simplex[a]] = 1.0
        laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
        n = len(skin)
        skin_weights = np.linalg.solve(laplacian[:n, :n], -laplacian[:n, n:] @ known_weights)
        self._free = np.array(skin + list(attached), int)
        self._free_weights = np.vstack([skin_weights] + [w[None] for w in attached.values()])

    def _below_lip_weights(self, local: np.ndarray, i: int) -> np.ndarray | None:
        """Weights (61,) over the controls for mesh point i if it lies between the lower lip and
        the jaw line (within the mouth's width), else None."""
        u, v = local[i]
        if abs(u) > self.half_width:
            return None
        lip = _OUTER_LOWER_WITH_CORNERS
        w_lip = _contour_weights(self._local_controls[lip, 0], u)
        v_lip = w_lip @ self._local_controls[lip, 1]
        jaw = self._local_controls[N_LIPS:]
        chin_part = N_LIPS + np.flatnonzero((np.abs(jaw[:, 0]) < 1.5 * self.half_width) & (jaw[:, 1] > 0))
        w_jaw = _contour_weights(self._local_controls[chin_part, 0], u)
        v_jaw = w_jaw @ self._local_controls[chin_part, 1]
        if not v_lip < v < v_jaw:
            return None
        t = (v - v_lip) / (v_jaw - v_lip)
        weights = np.zeros(len(CONTROLS))
        weights[lip] += (1 - t) * w_lip
        weights[chin_part] += t * w_jaw
        return weights

    def _on_lip_weights(self, local: np.ndarray, i: int) -> np.ndarray | None:
        """Weights (61,) over the controls for mesh point i if it lies on a lip, else None."""
        point = local[i]
        margin = 0.01
        lips = np.arange(N_LIPS)
        for outer, inner in ((_OU, _IU), (_OUTER_LOWER_WITH_CORNERS, _INNER_LOWER_WITH_CORNERS)):
            outer_idx, inner_idx = lips[outer], lips[inner]
            polygon = np.vstack([self._local_controls[outer_idx], self._local_controls[inner_idx][::-1]])
            inside = cv2.pointPolygonTest(polygon.astype(np.float32), tuple(float(v) for v in point), True)
            if inside < -margin:
                continue
            w_outer = _contour_weights(self._local_controls[outer_idx, 0], point[0])
            w_inner = _contour_weights(self._local_controls[inner_idx, 0], point[0])
            v_outer = w_outer @ self._local_controls[outer_idx, 1]
            v_inner = w_inner @ self._local_controls[inner_idx, 1]
            thickness = v_outer - v_inner
            share = float(np.clip((point[1] - v_inner) / thickness, 0, 1)) if abs(thickness) > 1e-6 else 0.5
            weights = np.zeros(len(CONTROLS))
            weights[outer_idx] += share * w_outer
            weights[inner_idx] += (1 - share) * w_inner
            return weights
        return None

    def _controls(self, opening: np.ndarray, spread: np.ndarray, close: np.ndarray) -> np.ndarray:
        """Control points (..., 61, 2) in the mouth frame; inputs broadcast together.

        opening: inner-lip aperture in units of APERTURE_AT_FULL_OPEN (jaw_open * (1 - lip_close)).
        """
        opening, spread, close = (np.asarray(a, np.float64)[..., None] for a in (opening, spread, close))
        spread_pos, rounded = np.maximum(spread, 0.0), np.maximum(-spread, 0.0)
        ratio = 1 + spread_pos * (WIDTH_AT_SPREAD - 1) - rounded * (1 - WIDTH_AT_ROUNDED)
        scale = ratio * self.neutral_width / (2 * self.half_width)
        rest = self._rest[:N_LIPS]
        u = rest[:, 0] * scale
        thickness = (1 - THIN_AT_SPREAD * spread_pos + THICK_AT_ROUNDED * rounded * (1 + self._corner_sq))
        thickness = thickness * (1 - THIN_AT_CLOSE * close)
        v = self._meet_at + (rest[:, 1] - self._meet_at) * thickness
        v = v - CORNER_LIFT * spread_pos * self._corner_sq
        exponent = (PROFILE_NEUTRAL + (PROFILE_SPREAD - PROFILE_NEUTRAL) * spread_pos
                    + (PROFILE_ROUNDED - PROFILE_NEUTRAL) * rounded)
        profile = (1 - self._across_sq) ** exponent
        profile = profile / profile[..., self._central].mean(axis=-1, keepdims=True)
        gap = APERTURE_AT_FULL_OPEN * opening * profile
        gap = np.where(self._is_corner, 0.0, gap)
        v = v + np.where(self._is_upper, -UPPER_SHARE_OPENING * gap, (1 - UPPER_SHARE_OPENING) * gap)
        jaw = self._rest[N_LIPS:]
        drop = self.chin_follow * (1 - UPPER_SHARE_OPENING) * APERTURE_AT_FULL_OPEN * opening * self._jaw_weight
        shape = opening.shape[:-1]
        lips = np.stack(np.broadcast_arrays(u, v), axis=-1).reshape(shape + (N_LIPS, 2))
        jaw_pts = np.broadcast_to(jaw, shape + jaw.shape).copy()
        jaw_pts[..., 1] += drop
        return np.concatenate([lips, jaw_pts], axis=-2)

    # -- the inverse ----------------------------------------------------------------------------

    def fit(self, landmarks: np.ndarray) -> np.ndarray:
        """Mouth parameters (4,) float32 for landmarks (478, 2) of this face, or (T, 4) for (T, 478, 2).

        Other frames are aligned to the neutral by a similarity on eyes and nose first. Least
        squares over the 40 lip points; jaw_open is undetermined at lip_close = 1 (returned as
        the opening alone). teeth is estimated from the opening as `params_from_measures` does.
        """
        lm = np.asarray(landmarks, np.float64)
        single = lm.ndim == 2
        lm = lm[None] if single else lm
        observed = self.to_local(_align(lm, self._stable_px))[:, list(LIP_CONTROLS)]
        q = self._initial_guess(observed)
        low, high = np.array([0.0, -1.0, 0.0]), np.array([1.0, 1.0, 1.0])
        damping = np.full(len(q), 1e-3)
        cost = self._cost(q, observed)
        for _ in range(FIT_ITERATIONS):
            residual, jac = self._residual_and_jacobian(q, observed)
            jtj = np.einsum("tri,trj->tij", jac, jac) + damping[:, None, None] * np.eye(3)
            step = np.linalg.solve(jtj, -np.einsum("tri,tr->ti", jac, residual)[..., None])[..., 0]
            trial = np.clip(q + step, low, high)
            trial_cost = self._cost(trial, observed)
            better = trial_cost < cost
            q[better], cost[better] = trial[better], trial_cost[better]
            damping = np.where(better, damping * 0.3, damping * 10)
        opening, spread, close = q.T
        with np.errstate(divide="ignore", invalid="ignore"):
            jaw = np.where(close < 0.999, opening / (1 - close), opening)
        teeth = np.clip(2 * opening, 0, 1)
        params = clip_params(np.stack([jaw, spread, close, teeth], axis=-1))
        return params[0] if single else params

    def _initial_guess(self, observed: np.ndarray) -> np.ndarray:
        gaps = observed[:, _IL.start + 3 : _IL.start + 6, 1] - observed[:, _IU.start + 4 : _IU.start + 7, 1]
        opening = np.clip(gaps.mean(axis=1) / APERTURE_AT_FULL_OPEN, 0, 1)
        ratio = (observed[:, 10, 0] - observed[:, 0, 0]) / self.neutral_width
        spread = np.where(ratio >= 1, (ratio - 1) / (WIDTH_AT_SPREAD - 1), (ratio - 1) / (1 - WIDTH_AT_ROUNDED))
        return np.stack([opening, np.clip(spread, -1, 1), np.zeros_like(opening)], axis=1)

    def _residual(self, q: np.ndarray, observed: np.ndarray) -> np.ndarray:
        model = self._controls(q[:, 0], q[:, 1], q[:, 2])[:, :N_LIPS]
        return (model - observed).reshape(len(q), -1)

    def _cost(self, q: np.ndarray, observed: np.ndarray) -> np.ndarray:
        return np.sum(self._residual(q, observed) ** 2, axis=1)

    def _residual_and_jacobian(self, q: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = self._residual(q, observed)
        eps = 1e-4
        columns = []
        for i in range(3):
            shifted = q.copy()
            # Differences taken inward from the bounds, so the model is never evaluated outside them.
            sign = np.where(shifted[:, i] + eps > 1.0, -1.0, 1.0)
            shifted[:, i] += sign * eps
            columns.append((self._residual(shifted, observed) - residual) / (sign[:, None] * eps))
        return residual, np.stack(columns, axis=-1)


def _contour_weights(us: np.ndarray, u: float) -> np.ndarray:
    """Weights (K,) over a contour's points (u coordinates us, monotone) interpolating linearly at u."""
    order = np.argsort(us)
    weights = np.zeros(len(us))
    j = int(np.clip(np.searchsorted(us[order], u), 1, len(us) - 1))
    a, b = us[order][j - 1], us[order][j]
    t = float(np.clip((u - a) / (b - a), 0, 1)) if b > a else 0.5
    weights[order[j - 1]], weights[order[j]] = 1 - t, t
    return weights


def _align(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Landmarks (T, 478, 2) moved by the similarity that best maps their stable points onto reference."""
    src = landmarks[:, list(STABLE_POINTS)]
    src_mean, ref_mean = src.mean(axis=1, keepdims=True), reference.mean(axis=0)
    a, b = src - src_mean, reference - ref_mean
    # Complex-number least squares: b ~ z * a with z = s * exp(i * angle).
    za, zb = a[..., 0] + 1j * a[..., 1], b[..., 0] + 1j * b[..., 1]
    z = np.sum(np.conj(za) * zb, axis=1) / np.sum(np.abs(za) ** 2, axis=1)
    centred = landmarks - src_mean
    zc = (centred[..., 0] + 1j * centred[..., 1]) * z[:, None]
    return np.stack([zc.real, zc.imag], axis=-1) + ref_mean
