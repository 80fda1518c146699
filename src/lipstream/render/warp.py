"""`warp`: lips and jaw of one photo (or of each video frame) moved by the mouth parameters.

Per source frame, once: a `LipModel` of its face; the lip contours (with extra points on a
spline through them), the other face-mesh points inside the lower-face box thinned to an even
spacing, and fixed points on the box border; their Delaunay triangulation, taken with the mouth
wide open and kept from crossing any lip contour, so no triangle spans the opening; and the
region's soft mask. Per output frame: the
lip model gives the moved landmarks, `MeshWarp` turns them into remap maps over the box only,
the inside of the opening is painted (`mouth_interior`), and the box is blended back with the
union of the package mask and the warped mask (the chin may drop past the package mask's
edge). The photo's life (blinks, sway; `idle.IdleMotion`) is applied to the finished frame.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from lipstream.face.mouth import CHIN, EYE_OUTER_CORNERS, INNER_LOWER, INNER_UPPER, OUTER_LOWER, OUTER_UPPER
from lipstream.motion.lip_model import LipModel
from lipstream.motion.params import TEETH
from lipstream.render.base import Renderer, register
from lipstream.render.compose import paste_region
from lipstream.render.idle import IdleMotion
from lipstream.render.mesh_warp import MeshWarp, border_points, triangulate
from lipstream.render.mouth_interior import mouth_colours, paint_interior

N_MESH = 468  # face-mesh points; the 10 iris points after them are left out
N_LANDMARKS = 478
BORDER_SPACING = 0.25  # eye distances between fixed points on the box border
BORDER_CLEARANCE_PX = 2.0  # mesh points closer than this to the box border are left out
WIDE_OPEN = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
CACHED_SOURCES = 32  # per-frame geometries kept for video avatars
# Lip contours get extra mesh points on a Catmull-Rom spline through them (pieces per segment),
# so lip edges and the painted opening are smooth curves, not polygons.
SMOOTHED_CONTOURS = ((INNER_UPPER, 2), (INNER_LOWER, 2), (OUTER_UPPER, 2), (OUTER_LOWER, 2))
# Other mesh points are thinned to about this spacing (eye distances): fewer triangles to draw
# per frame, and the skin moves smoothly enough for a coarser piecewise-affine warp.
MESH_SPACING = 0.08
# The chin drops at most this share of the room below it in the box: the neck between them is
# squeezed, and more squeeze shows as a hard line under the jaw.
CHIN_ROOM_SHARE = 0.5


@dataclass
class _Geometry:
    """What one source frame's warp needs (box-relative arrays, frame-pixel points)."""

    model: LipModel
    points: np.ndarray  # (P,) landmark indices warped
    border: np.ndarray  # (B, 2) fixed frame pixels
    warp: MeshWarp
    mask: np.ndarray  # (h, w) uint8 package mask resized to the box
    colours: dict[str, np.ndarray]
    inner_upper: np.ndarray  # positions of the smoothed inner contours in the warped points
    inner_lower: np.ndarray


@register
class WarpRenderer(Renderer):
    name = "warp"

    def __init__(self, avatar, **options):
        super().__init__(avatar, **options)
        self.idle = IdleMotion(avatar, still=self.still, seed=self.seed)
        self.neutral_width = avatar.manifest.get("neutral_mouth_width")
        self._geometries: OrderedDict[int, _Geometry] = OrderedDict()
        self._geometry(0)

    def render_frame(self, k: int, params: np.ndarray) -> np.ndarray:
        """Frame k (H, W, 3) uint8 RGB with the mouth of params (4,) float32."""
        frame, _, i = self.idle.source(k)
        return self.idle.animate(k, self.warp_mouth(frame, i, params))

    def warp_mouth(self, frame: np.ndarray, i: int, params: np.ndarray) -> np.ndarray:
        """Source frame i (H, W, 3) uint8 RGB with its mouth moved to params (4,); a new array."""
        geo = self._geometry(i)
        x0, y0, x1, y1 = (int(v) for v in geo.warp.box)
        target = _with_spline(geo.model.shape(params))[geo.points]
        target = np.clip(target, [x0 + 1, y0 + 1], [x1 - 2, y1 - 2])
        map_x, map_y = geo.warp.maps(np.vstack([target, geo.border]))
        patch = cv2.remap(np.ascontiguousarray(frame[y0:y1, x0:x1]), map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        moved_mask = cv2.remap(geo.mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = (np.maximum(geo.mask, moved_mask).astype(np.float32) * (1 / 255))[..., None]
        upper = target[geo.inner_upper] - [x0, y0]
        lower = target[geo.inner_lower] - [x0, y0]
        paint_interior(patch, upper, lower, float(params[TEETH]), geo.model.eye_px, geo.colours)
        return paste_region(frame, patch, geo.warp.box, alpha)

    def _geometry(self, i: int) -> _Geometry:
        if i in self._geometries:
            self._geometries.move_to_end(i)
            return self._geometries[i]
        geo = build_geometry(
            np.asarray(self.avatar.frames[i]),
            np.asarray(self.avatar.landmarks[i], np.float32),
            np.asarray(self.avatar.mouth_boxes[i]),
            np.asarray(self.avatar.mouth_masks[i]),
            self.neutral_width,
        )
        self._geometries[i] = geo
        if len(self._geometries) > CACHED_SOURCES:
            self._geometries.popitem(last=False)
        return geo


def build_geometry(frame: np.ndarray, landmarks: np.ndarray, box: np.ndarray, mask: np.ndarray,
                   neutral_width: float | None) -> _Geometry:
    """The warp geometry of one frame: landmarks (478, 2) px, box (4,) int, mask (128, 128) uint8."""
    x0, y0, x1, y1 = (float(v) for v in box)
    eye_px = float(np.linalg.norm(landmarks[EYE_OUTER_CORNERS[0]] - landmarks[EYE_OUTER_CORNERS[1]]))
    room = (y1 - 1 - landmarks[CHIN, 1]) / eye_px
    model = LipModel(landmarks, neutral_width, chin_drop_limit=CHIN_ROOM_SHARE * room)
    source = _with_spline(landmarks)
    c = BORDER_CLEARANCE_PX
    inside = np.all((source > [x0 + c, y0 + c]) & (source < [x1 - 1 - c, y1 - 1 - c]), axis=1)
    inside[N_MESH:] = False
    contours = np.unique(np.concatenate(_PATHS))
    others = np.setdiff1d(np.flatnonzero(inside), contours)
    points = _thinned(source, contours, others, MESH_SPACING * model.eye_px)
    border = border_points(box, BORDER_SPACING * model.eye_px)
    wide = np.clip(_with_spline(model.shape(WIDE_OPEN))[points], [x0 + 1, y0 + 1], [x1 - 2, y1 - 2])
    position = {p: j for j, p in enumerate(points)}
    contour_edges = [(position[a], position[b]) for path in _PATHS for a, b in zip(path[:-1], path[1:])]
    triangles = triangulate(np.vstack([wide, border]), contour_edges)
    warp = MeshWarp(np.vstack([source[points], border]), triangles, box)
    return _Geometry(
        model=model,
        points=points,
        border=border,
        warp=warp,
        mask=cv2.resize(np.asarray(mask), (int(x1 - x0), int(y1 - y0)), interpolation=cv2.INTER_LINEAR),
        colours=mouth_colours(frame, landmarks),
        inner_upper=np.array([position[p] for p in _PATHS[0]]),
        inner_lower=np.array([position[p] for p in _PATHS[1]]),
    )


def _thinned(points: np.ndarray, required: np.ndarray, optional: np.ndarray, spacing: float) -> np.ndarray:
    """Sorted indices: all `required` ones plus the `optional` ones (nearest to the required
    ones' centre first) that keep at least `spacing` pixels from every point taken before them."""
    centre = points[required].mean(axis=0)
    taken = list(required)
    for i in optional[np.argsort(np.linalg.norm(points[optional] - centre, axis=1))]:
        if np.min(np.linalg.norm(points[taken] - points[i], axis=1)) >= spacing:
            taken.append(int(i))
    return np.sort(np.array(taken, int))


def _spline(contours) -> tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]]:
    """Catmull-Rom extra points on open contours: ((K, 4) indices, (K, 4) weights), and each
    contour's path through landmarks and extras (extra k has index N_LANDMARKS + k)."""
    indices, weights, paths = [], [], []
    for contour, pieces in contours:
        path = [contour[0]]
        for j in range(len(contour) - 1):
            four = [contour[max(j - 1, 0)], contour[j], contour[j + 1], contour[min(j + 2, len(contour) - 1)]]
            for t in np.arange(1, pieces) / pieces:
                indices.append(four)
                weights.append(0.5 * np.array([-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3,
                                               t + 4 * t**2 - 3 * t**3, -(t**2) + t**3]))
                path.append(N_LANDMARKS + len(indices) - 1)
            path.append(contour[j + 1])
        paths.append(np.array(path))
    return (np.array(indices), np.array(weights)), paths


_SPLINE, _PATHS = _spline(SMOOTHED_CONTOURS)


def _with_spline(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks (478, 2) px followed by the extra spline points (K, 2): (478 + K, 2) float32."""
    indices, weights = _SPLINE
    return np.vstack([landmarks, np.einsum("kj,kjd->kd", weights, landmarks[indices])]).astype(np.float32)
