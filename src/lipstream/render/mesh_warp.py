"""Piecewise-affine image warps over a fixed triangulation of landmark points inside a box.

A `MeshWarp` holds the source points (pixels of the frame) and triangles once; for each new set
of destination points it builds backward maps for cv2.remap over the box only: every box pixel
gets the affine of the destination triangle it falls in, mapping it back to the source. Points
on the box border stay fixed, so the warp is the identity along the border and outside it.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

# Triangles whose vertices all move less than this many pixels are left as the identity.
STILL_PX = 0.05
MIN_AREA_PX = 0.5  # destination triangles smaller than this (square px) are not drawn
SUBPIXEL_BITS = 4  # fractional bits of the coordinates handed to cv2's polygon drawing
SEAM_MARGIN_PX = 12  # > line half-width (1) + 4 sigma of the band blur (4) + the soft blur's reach (4)


def border_points(box: np.ndarray, spacing: float) -> np.ndarray:
    """Points (K, 2) float64 along the edges of box (x0, y0, x1, y1), about `spacing` px apart."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x1, y1 = x1 - 1, y1 - 1  # last pixel centres
    nx = max(int(np.ceil((x1 - x0) / spacing)), 1)
    ny = max(int(np.ceil((y1 - y0) / spacing)), 1)
    xs, ys = np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1)
    top = np.stack([xs, np.full_like(xs, y0)], 1)
    bottom = np.stack([xs, np.full_like(xs, y1)], 1)
    left = np.stack([np.full_like(ys[1:-1], x0), ys[1:-1]], 1)
    right = np.stack([np.full_like(ys[1:-1], x1), ys[1:-1]], 1)
    return np.vstack([top, bottom, left, right])


def triangulate(points: np.ndarray, constraints: list[tuple[int, int]] = ()) -> np.ndarray:
    """Delaunay triangles (M, 3) int32 of points (N, 2), counter-clockwise, that contain every
    constraint edge (i, j) too (edges crossing one are flipped away, as in Sloan's algorithm)."""
    pts = np.asarray(points, np.float64)
    tri = Delaunay(pts).simplices.astype(np.int32)
    for a, b in constraints:
        for _ in range(len(tri)):
            if np.any((tri == a).any(axis=1) & (tri == b).any(axis=1)):
                break
            pair = _flippable_crossing(pts, tri, a, b)
            if pair is None:
                break
            tri = _flip(tri, *pair)
    area = signed_areas(pts, tri)
    tri[area < 0] = tri[area < 0][:, ::-1]
    return tri


def _orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Twice the signed area of triangles (p, q, r), broadcasting over leading axes."""
    return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])


def _cross(p: np.ndarray, q: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether segments p-q and u-v cross at a point inside both (broadcasting)."""
    return (_orient(p, q, u) * _orient(p, q, v) < 0) & (_orient(u, v, p) * _orient(u, v, q) < 0)


def _flippable_crossing(pts: np.ndarray, tri: np.ndarray, a: int, b: int) -> tuple[int, int] | None:
    """The two triangles around an edge that crosses segment a-b and whose quad is convex, or None."""
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(tri)), 3)
    crossing = np.flatnonzero(_cross(pts[a], pts[b], pts[edges[:, 0]], pts[edges[:, 1]]))
    for u, v in np.unique(edges[crossing], axis=0):
        sides = owner[(edges[:, 0] == u) & (edges[:, 1] == v)]
        if len(sides) != 2:
            continue
        p, q = (int(np.setdiff1d(tri[t], (u, v))[0]) for t in sides)
        if _cross(pts[p], pts[q], pts[u], pts[v]):  # the quad is convex, so the flip is valid
            return int(sides[0]), int(sides[1])
    return None


def _flip(tri: np.ndarray, t1: int, t2: int) -> np.ndarray:
    """Replace the two triangles sharing an edge by the two on the quad's other diagonal."""
    u, v = np.intersect1d(tri[t1], tri[t2])
    p, q = int(np.setdiff1d(tri[t1], (u, v))[0]), int(np.setdiff1d(tri[t2], (u, v))[0])
    out = tri.copy()
    out[t1], out[t2] = (p, q, u), (p, q, v)
    return out


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed area (M,) of each triangle of points (..., N, 2); positive = counter-clockwise in (x, y)."""
    a, b, c = (points[..., triangles[:, i], :] for i in range(3))
    return 0.5 * ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))


class MeshWarp:
    """Backward maps for a piecewise-affine warp inside box (x0, y0, x1, y1) of a frame.

    src_points: (N, 2) pixels in the frame; triangles: (M, 3) indices into them. Maps are in
    box-relative pixel coordinates (for cv2.remap of the box crop), (h, w) float32 each.
    """

    def __init__(self, src_points: np.ndarray, triangles: np.ndarray, box: np.ndarray):
        self.box = np.asarray(box, np.int32)
        x0, y0, x1, y1 = (int(v) for v in self.box)
        self.size = (x1 - x0, y1 - y0)
        self.src = np.asarray(src_points, np.float64) - [x0, y0]
        self.triangles = np.asarray(triangles, np.int32)
        self._grid = tuple(np.meshgrid(np.arange(self.size[0], dtype=np.float32),
                                       np.arange(self.size[1], dtype=np.float32)))
        src_tri = self.src[self.triangles]  # (M, 3, 2)
        self._src_tri = src_tri.transpose(0, 2, 1)  # (M, 2, 3)

    def maps(self, dst_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward maps (map_x, map_y) so that remap(box crop) moves src points onto dst_points (frame px)."""
        x0, y0 = float(self.box[0]), float(self.box[1])
        dst = np.asarray(dst_points, np.float64) - [x0, y0]
        moving = np.linalg.norm(dst - self.src, axis=1) > STILL_PX
        active = np.flatnonzero(moving[self.triangles].any(axis=1))
        if not len(active):
            return self._grid[0].copy(), self._grid[1].copy()
        tri = self.triangles[active]
        dst_tri = dst[tri]  # (A, 3, 2)
        homog = np.concatenate([dst_tri.transpose(0, 2, 1), np.ones((len(tri), 1, 3))], axis=1)  # (A, 3, 3)
        # Triangles of (near) zero area cover no pixel centre but would still draw their edges
        # with an exploding affine; bigger triangles are drawn last and win on shared edges.
        area = np.abs(np.linalg.det(homog)) / 2
        drawn = np.flatnonzero(area >= MIN_AREA_PX)
        drawn = drawn[np.argsort(area[drawn])]
        affine = np.zeros((6, len(tri) + 1), np.float32)
        affine[[0, 4], -1] = 1  # the identity for pixels no drawn triangle covers
        affine[:, drawn] = (self._src_tri[active[drawn]] @ np.linalg.inv(homog[drawn])).reshape(-1, 6).T
        ids = np.full((self.size[1], self.size[0]), len(tri), np.int16 if len(tri) < 32000 else np.int32)
        corners = np.round(dst_tri * (1 << SUBPIXEL_BITS)).astype(np.int32)
        for i in drawn:
            cv2.fillConvexPoly(ids, corners[i], int(i), lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
        a = [np.take(row, ids) for row in affine]
        grid_x, grid_y = self._grid
        return a[0] * grid_x + a[1] * grid_y + a[2], a[3] * grid_x + a[4] * grid_y + a[5]



def soften_seams(region: np.ndarray, lines: list[np.ndarray], strength: float = 1.0) -> None:
    """Blur region (h, w, 3) uint8 in place along polylines (K, 2) in its pixels, `strength` 0..1.

    Where a warp squeezes an opening shut (closed lips, a closed eye) its map jumps across the
    seam and the pixel grid shows as steps; a narrow blur along the seam hides them.
    """
    # Only the lines' surroundings change: work on their box plus SEAM_MARGIN_PX, beyond the reach
    # of the line width and both blurs, so the result equals blurring the whole region.
    points = np.vstack(lines)
    h, w = region.shape[:2]
    x0, y0 = np.clip(np.floor(points.min(axis=0)).astype(int) - SEAM_MARGIN_PX, 0, [w, h])
    x1, y1 = np.clip(np.ceil(points.max(axis=0)).astype(int) + SEAM_MARGIN_PX + 1, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return
    sub = region[y0:y1, x0:x1]
    band = np.zeros(sub.shape[:2], np.uint8)
    scale = 1 << SUBPIXEL_BITS
    cv2.polylines(band, [np.round((line - [x0, y0]) * scale).astype(np.int32) for line in lines], False, 255, 2,
                  cv2.LINE_AA, SUBPIXEL_BITS)
    a = (cv2.GaussianBlur(band, (0, 0), 1.0).astype(np.float32) * (strength / 255.0))[..., None]
    soft = cv2.GaussianBlur(sub, (0, 0), 0.8).astype(np.float32)
    sub[:] = np.clip(sub + (soft - sub) * a + 0.5, 0, 255).astype(np.uint8)
