"""Where the neural renderer looks: an aligned square crop of the lower face, the region it
hides and redraws, and the drawing of the lip shape it is asked for.

Crop: a square of CROP_SIDE eye distances (outer-eye-corner distance), centred on the mouth
corners' mean position and starting CROP_TOP eye distances above the nose base, on the face
aligned by a similarity on the stable upper-face points (lipstream.face.align) to the avatar's
mean pose. So head motion in the image plane is removed and the mouth sits at the same place
in every crop; a crop of S pixels has S / CROP_SIDE pixels per eye distance.

Hidden region: one fixed soft mask per avatar in crop coordinates (from the mean face), the
mouth and jaw from just under the nose to CHIN_ROOM below the chin, reaching at most
SIDE_REACH beyond the mouth corners. The network sees the crop with it zeroed and draws it.

Sketch: the lip model's control points (lipstream.motion.lip_model.CONTROLS: 40 lip points and
21 jaw-line points, frame pixels) mapped into the crop and drawn with anti-aliased lines (one
channel) and the inside of the mouth opening filled (another). Training draws it from the lip
model fitted to each frame's landmarks and redrawn, rendering from the lip model driven by
mouth parameters: the same function on the same kind of points, so the network sees no
difference between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipstream.face import align
from lipstream.face.mouth import MOUTH_CORNERS
from lipstream.face.region import SUBNASALE
from lipstream.neural.layout import MAX_FLOW

CROP_SIDE = 2.0  # eye distances
CROP_TOP = 0.35  # eye distances above the nose base
MASK_TOP = 0.08  # hidden region starts this far (eye distances) below the nose base
CHIN_ROOM = 0.25  # and ends this far below the chin (an opening jaw drops the chin)
SIDE_REACH = 0.45  # at most this far beyond the mouth corners (eye distances)
MASK_GROW = 0.04
MASK_FEATHER = 0.06  # the blend fades in over this width, inside the hidden region
DETAIL_SIGMA = 1.0  # crop pixels: detail finer than this comes from the moved reference frame
LIP_GUARD = 0.05  # eye distances around the lips (asked for and the reference's) that take no detail
LINE_WIDTH = 1.0 / 128  # sketch line thickness, as a share of the crop side
_SHIFT = 4  # cv2 drawing sub-pixel bits

# Positions in lipstream.motion.lip_model.CONTROLS order (see LIP_CONTROLS there).
_OUTER_UPPER = list(range(0, 11))
_OUTER_LOWER = [0, *range(11, 20), 10]
_INNER_UPPER = list(range(20, 31))
_INNER_LOWER = [20, *range(31, 40), 30]
_JAW = list(range(40, 61))
# Lower jaw-line points (positions in CONTROLS' jaw part) that bound the hidden region.
_LOWER_JAW = list(range(43, 58))


@dataclass
class CropGeometry:
    """The crop of one avatar: `template` (K, 2) float32 canonical positions of
    align.STABLE_POINTS (eye distances), `centre_x` and `top` in the same units, and the hidden
    region's polygon (P, 2) float32 in crop units (0..1 across the crop)."""

    template: np.ndarray
    centre_x: float
    top: float
    hidden_polygon: np.ndarray

    def to_dict(self) -> dict:
        return {"template": np.round(self.template, 6).tolist(), "centre_x": round(float(self.centre_x), 6),
                "top": round(float(self.top), 6), "hidden_polygon": np.round(self.hidden_polygon, 6).tolist(),
                "side": CROP_SIDE}

    @classmethod
    def from_dict(cls, data: dict) -> "CropGeometry":
        return cls(np.asarray(data["template"], np.float32), float(data["centre_x"]), float(data["top"]),
                   np.asarray(data["hidden_polygon"], np.float32))

    def transforms(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        """Frame-pixels -> crop-pixels similarities (..., 2, 3) float64 for landmarks (..., 478, 2)."""
        pixels = (self.template - [self.centre_x - CROP_SIDE / 2, self.top]) * (size / CROP_SIDE)
        return align.to_canonical(landmarks, pixels)

    def hidden_mask(self, size: int) -> np.ndarray:
        """The soft hidden region (S, S) uint8, 255 = hidden."""
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(self.hidden_polygon * size * (1 << _SHIFT)).astype(np.int32)], 255,
                     cv2.LINE_AA, _SHIFT)
        grow = max(int(round(MASK_GROW / CROP_SIDE * size)), 1)
        return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))

    def skin_ring(self, size: int, reach: float) -> np.ndarray:
        """(S, S) float32 0/1: the real skin in a ring `reach` eye distances wide around the
        hidden region, outside it (what the network sees and the renderer leaves real)."""
        hard = (self.hidden_mask(size) > 127).astype(np.uint8)
        grow = max(int(round(reach / CROP_SIDE * size)), 1)
        grown = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
        return (grown & (1 - hard)).astype(np.float32)

    def blend_mask(self, size: int) -> np.ndarray:
        """Blend weights (S, S) float32 in [0, 1]: 1 deep inside the hidden region, fading to 0
        at its edge, so the pasted drawing meets the real frame where the network saw it."""
        feather = MASK_FEATHER / CROP_SIDE * size
        hard = (self.hidden_mask(size) > 127).astype(np.uint8)
        inner = cv2.erode(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(feather) + 1,) * 2))
        soft = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), max(feather / 2, 0.5))
        return np.minimum(soft, hard.astype(np.float32))


def crop_geometry(landmarks: np.ndarray) -> CropGeometry:
    """The crop of an avatar from its landmarks (N, 478, 2) float32 pixels (all frames or some)."""
    landmarks = np.asarray(landmarks, np.float32)
    template = align.mean_stable_shape(landmarks)
    canonical = align.apply(align.to_canonical(landmarks, template), landmarks).mean(axis=0)
    centre_x = float(canonical[list(MOUTH_CORNERS), 0].mean())
    top = float(canonical[SUBNASALE, 1] - CROP_TOP)
    crop = (canonical - [centre_x - CROP_SIDE / 2, top]) / CROP_SIDE  # crop units
    return CropGeometry(template, centre_x, top, _hidden_polygon(crop))


def _hidden_polygon(crop_lm: np.ndarray) -> np.ndarray:
    """Polygon (P, 2) in crop units: under the nose, down the jaw to below the chin, limited sideways."""
    from lipstream.motion.lip_model import CONTROLS

    eye = 1.0 / CROP_SIDE  # an eye distance in crop units
    controls = crop_lm[list(CONTROLS)]
    left, right = np.sort(crop_lm[list(MOUTH_CORNERS), 0])
    jaw = controls[_LOWER_JAW].copy()
    jaw[:, 0] = np.clip(jaw[:, 0], left - SIDE_REACH * eye, right + SIDE_REACH * eye)
    dropped = jaw + [0.0, CHIN_ROOM * eye]
    top_y = crop_lm[SUBNASALE, 1] + MASK_TOP * eye
    polygon = np.vstack([[jaw[0, 0], top_y], jaw[:1], dropped, jaw[-1:], [jaw[-1, 0], top_y]])
    return np.clip(polygon, 0.02, 0.98).astype(np.float32)


def crop_frame(frame: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The (S, S, 3) uint8 crop of an RGB frame (H, W, 3) under a frame-to-crop transform (2, 3)."""
    frame, transform = np.asarray(frame), np.asarray(transform, np.float64)
    scale = float(align.scale_of(transform))
    if scale < 0.8:  # shrinking: low-pass first so fine texture does not alias (only the crop's part)
        sigma = 0.5 * np.sqrt(1 / scale**2 - 1)
        x0, y0, x1, y1 = _frame_box(transform, (0, 0, size, size), frame.shape)
        margin = int(np.ceil(3 * sigma)) + 2
        x0, y0 = max(int(x0) - margin, 0), max(int(y0) - margin, 0)
        x1, y1 = min(int(x1) + margin, frame.shape[1]), min(int(y1) + margin, frame.shape[0])
        frame = cv2.GaussianBlur(frame[y0:y1, x0:x1], (0, 0), sigma)
        transform = transform.copy()
        transform[:, 2] += transform[:, :2] @ [x0, y0]
    return cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def draw_sketch(controls: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The sketch (2, S, S) uint8 of control points (61, 2) frame pixels (lip_model.CONTROLS order)."""
    points = align.apply(transform, np.asarray(controls, np.float64))
    fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
    lines = np.zeros((size, size), np.uint8)
    thickness = max(int(round(LINE_WIDTH * size)), 1)
    contours = [fixed[idx] for idx in (_OUTER_UPPER, _OUTER_LOWER, _INNER_UPPER, _INNER_LOWER, _JAW)]
    cv2.polylines(lines, contours, False, 255, thickness, cv2.LINE_AA, _SHIFT)
    inside = np.zeros((size, size), np.uint8)
    cv2.fillPoly(inside, [np.vstack([fixed[_INNER_UPPER], fixed[_INNER_LOWER][::-1]])], 255, cv2.LINE_AA, _SHIFT)
    return np.stack([lines, inside])


def blend_bounds(blend: np.ndarray) -> tuple[int, int, int, int]:
    """(u0, v0, u1, v1) crop pixels: the box of the blend weights' non-zero part (S, S) float32,
    one pixel wider each side; only it is warped back and pasted."""
    ys, xs = np.nonzero(blend > 0)
    size = blend.shape[0]
    if not len(xs):
        return 0, 0, size, size
    return max(int(xs.min()) - 1, 0), max(int(ys.min()) - 1, 0), min(int(xs.max()) + 2, size), \
        min(int(ys.max()) + 2, size)


def _frame_box(transform: np.ndarray, bounds: tuple[int, int, int, int],
               frame_shape: tuple[int, ...]) -> np.ndarray:
    """Box (x0, y0, x1, y1) int64 frame pixels covering the crop's `bounds` under the inverse of
    `transform` (frame -> crop), clipped to the frame."""
    u0, v0, u1, v1 = bounds
    corners = align.apply(align.invert(transform), np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]], np.float64))
    height, width = frame_shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [width - 1, height - 1])
    x1 = int(min(np.ceil(corners[:, 0].max()) + 1, width))
    y1 = int(min(np.ceil(corners[:, 1].max()) + 1, height))
    return np.array([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], np.int64)


def warp_back(crop: np.ndarray, transform: np.ndarray, blend: np.ndarray, frame_shape: tuple[int, ...],
              bounds: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crop (S, S, 3) uint8 and its blend weights (S, S) float32 warped back into the frame
    by the inverse of `transform` (frame -> crop): (patch (h, w, 3) uint8, box (x0, y0, x1, y1)
    int64 in frame pixels, alpha (h, w, 1) float32), ready for render.compose.paste_region.
    `bounds` (blend_bounds) limits the work to the part of the crop that is pasted."""
    size = crop.shape[0]
    box = _frame_box(transform, bounds or (0, 0, size, size), frame_shape)
    patch = _crop_in_box(crop, transform, box, cv2.BORDER_REPLICATE)
    return patch, box, _crop_in_box(blend, transform, box)[..., None]


def _crop_in_box(image: np.ndarray, transform: np.ndarray, box: np.ndarray,
                 border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """A crop-space image (S, S[, C]) sampled (bilinear) at the frame pixels of `box`
    (x0, y0, x1, y1) through `transform` (frame -> crop): (y1 - y0, x1 - x0[, C])."""
    to_box = align.invert(transform)
    to_box[:, 2] -= box[:2]
    size = (int(box[2] - box[0]), int(box[3] - box[1]))
    return cv2.warpAffine(image, to_box, size, flags=cv2.INTER_LINEAR, borderMode=border)


def warp_back_parts(parts: np.ndarray, transform: np.ndarray, blend: np.ndarray, frame_shape: tuple[int, ...],
                    reference_frame: np.ndarray, reference_transform: np.ndarray,
                    bounds: tuple[int, int, int, int] | None = None,
                    detail: np.ndarray | None = None, real_mouth: bool = False,
                    texture: "Texture | None" = None, base: np.ndarray | None = None,
                    ring: np.ndarray | None = None,
                    reference_focus: "Sharpness | None" = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The warp head's parts (6, S, S) float32 (colour, flow, mask, in [0, 1]; model.UNet.parts)
    made into frame pixels at the FRAME's resolution: each box pixel p takes the reference
    frame (H, W, 3) uint8 RGB at reference_transform^-1(c + flow(c)), c = transform(p) (bicubic,
    so the reference's own texture keeps its sharpness), mixed by the mask with the upsampled
    colour. Where `detail` (S, S) float32 in [0, 1] (detail_weight) is on, the moved reference's
    fine texture (finer than DETAIL_SIGMA crop pixels: skin grain, stubble) is added where the
    colour was taken, so skin stays as sharp as the footage; `real_mouth`: off the skin (the lips
    and the mouth opening) all pixels come from the moved reference (real lips and teeth, but
    a real mouth that is only like the one asked for). `texture` (Texture) instead sets the fine
    texture's strength from the result pasted into `base` (H, W, 3) uint8, the frame drawn into,
    and its real skin on `ring` (S, S) float32 (CropGeometry.skin_ring; `bounds` should reach
    it), against the reference frame's own sharpness there, `reference_focus` (reference_sharpness;
    measured here when None). Returns (patch, box, alpha) as warp_back."""
    size = parts.shape[-1]
    box = _frame_box(transform, bounds or (0, 0, size, size), frame_shape)
    xs = np.arange(box[0], box[2], dtype=np.float32)
    ys = np.arange(box[1], box[3], dtype=np.float32)
    t = np.asarray(transform, np.float32)
    map_u = t[0, 0] * xs[None, :] + t[0, 1] * ys[:, None] + t[0, 2]  # crop pixels of each box pixel
    map_v = t[1, 0] * xs[None, :] + t[1, 1] * ys[:, None] + t[1, 2]
    maps = cv2.convertMaps(map_u, map_v, cv2.CV_16SC2)
    sample = lambda image, border=cv2.BORDER_REPLICATE: cv2.remap(  # noqa: E731
        np.ascontiguousarray(image), *maps, cv2.INTER_LINEAR, borderMode=border)
    flow_parts = parts[3:5].transpose(1, 2, 0).astype(np.float32)
    if texture is not None and texture.flow_smooth > 0:
        flow_parts = cv2.GaussianBlur(flow_parts, (0, 0), texture.flow_smooth)
    flow = flow_pixels(sample(flow_parts), size)
    r = align.invert(reference_transform).astype(np.float32)
    src_u, src_v = map_u + flow[..., 0], map_v + flow[..., 1]
    src_x = r[0, 0] * src_u + r[0, 1] * src_v + r[0, 2]
    src_y = r[1, 0] * src_u + r[1, 1] * src_v + r[1, 2]
    moved = cv2.remap(np.asarray(reference_frame), src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    colour = sample(_antialiased(np.clip(parts[:3].transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8), t))
    mask = sample(_antialiased(np.ascontiguousarray(parts[5], np.float32), t))
    alpha = sample(np.asarray(blend, np.float32), cv2.BORDER_CONSTANT)
    if texture is not None and not real_mouth:
        drawn = cv2.blendLinear(moved, colour, mask, 1.0 - mask)
        if reference_focus is None:
            reference_focus = reference_sharpness(reference_frame, reference_transform, blend, ring, bounds)
        frame = None if base is None else np.asarray(base)[box[1]:box[3], box[0]:box[2]]
        skin = None if ring is None else sample(np.asarray(ring, np.float32), cv2.BORDER_CONSTANT) > 0.5
        return texture.transfer(drawn, moved, reference_focus, alpha, frame, skin), box, alpha[..., None]
    if detail is None:
        return cv2.blendLinear(moved, colour, mask, 1.0 - mask), box, alpha[..., None]
    sigma = DETAIL_SIGMA / float(align.scale_of(transform))
    fine = moved.astype(np.float32) - cv2.GaussianBlur(moved, (0, 0), sigma).astype(np.float32)
    skin = sample(np.asarray(detail, np.float32), cv2.BORDER_CONSTANT)
    if real_mouth:  # the lips and mouth all from the moved reference frame, as the bank renderer does
        mask = np.maximum(mask, 1.0 - skin)
    weight = (skin * (1.0 - mask))[..., None]
    patch = mask[..., None] * moved + (1.0 - mask[..., None]) * colour + weight * fine
    return np.clip(patch + 0.5, 0, 255).astype(np.uint8), box, alpha[..., None]


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    """The grey levels (h, w) float32 (ITU-R 601 luma) of an RGB image (h, w, 3) float32."""
    return cv2.transform(np.ascontiguousarray(image, np.float32), _LUMA[None])


def _laplacian(grey: np.ndarray) -> np.ndarray:
    """The 3x3 Laplacian (float32) of grey levels (h, w)."""
    return cv2.Laplacian(np.ascontiguousarray(grey, np.float32), cv2.CV_32F, ksize=1)


def _laplacian_of_grey(image: np.ndarray) -> np.ndarray:
    """The 3x3 Laplacian (float32) of an RGB image's grey levels (ITU-R 601 luma)."""
    return _laplacian(_grey(image))


@dataclass(frozen=True)
class Sharpness:
    """How sharp a real frame is where the texture goes, in its own pixels: `region`, the mean
    squared grey Laplacian over the region; `ring` (n,) float32, the squared grey Laplacian on
    the skin ring around it (empty: none)."""

    region: float
    ring: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, region: np.ndarray, ring: np.ndarray | None = None) -> "Sharpness":
        """Of an RGB image (h, w, 3) over `region` and `ring` (h, w) bool."""
        squared = _laplacian_of_grey(image.astype(np.float32)) ** 2
        return cls(float(np.mean(squared[region])) if region.any() else 0.0,
                   squared[ring] if ring is not None else np.zeros(0, np.float32))


def reference_sharpness(frame: np.ndarray, transform: np.ndarray, blend: np.ndarray, ring: np.ndarray | None,
                        bounds: tuple[int, int, int, int] | None = None) -> Sharpness:
    """The sharpness of a reference frame (H, W, 3) uint8 over the blend region and skin ring
    ((S, S) float32 crop masks; bounds: blend_bounds reaching the ring), mapped into it by its
    `transform` (frame -> crop): measured in the frame's OWN pixels, where its camera's blur,
    focus and compression are, not after resampling it to another frame's scale (a reference
    whose face is larger, shrunk onto a smaller one, reads sharper than any frame its camera
    made at that scale)."""
    size = blend.shape[0]
    x0, y0, x1, y1 = _frame_box(transform, bounds or (0, 0, size, size), frame.shape)
    box = np.array([max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, frame.shape[1]), min(y1 + 1, frame.shape[0])])
    region = _crop_in_box(np.asarray(blend, np.float32), transform, box) > 0  # a pixel more: the Laplacian's border
    skin = None if ring is None else _crop_in_box(np.asarray(ring, np.float32), transform, box) > 0.5
    return Sharpness.of(np.asarray(frame)[box[1]:box[3], box[0]:box[2]], region, skin)


@dataclass(frozen=True)
class Texture:
    """The warp head's result given the footage's own fine texture (frame pixels).

    The drawing (the mask's mix of colour and moved reference) keeps what is coarser than a
    Gaussian of `sigma`; the moved reference frame's texture finer than that (teeth, lip
    lines, beard, skin grain) is added with the one weight w that brings the sharpness of the
    RESULT over the region, as it will be seen (blended into the frame with the blend weights),
    to a target: the variance of the grey Laplacian (the focus measure lipstream bench neural
    reports) solved exactly, counting what the drawing already shares with the moved
    reference (it mixes it in: the two are correlated), then solved again for what clipping
    the result to 0..255 takes off (bright teeth, dark mouth). A drawing sharper than the
    target (ragged edges) has its own fine part scaled down instead.

    Only where the moved reference has the drawing's edges: where its coarse picture has edges
    the drawing lacks (its lips, teeth, jaw line a few pixels off the ones drawn), its fine
    texture would draw them again beside them, double lip lines and striped teeth. There the
    drawing's OWN fine part is added instead (its edges, in place, sharpened), by
    agreement_gate with `agreement` grey levels a pixel, chosen by leave-one-clip-out with
    `max_weight` (docs/neural.md).

    Target: the reference frame's own sharpness over the region (a real frame of this person
    with a mouth like the one asked for, measured in its own pixels: reference_sharpness), times
    (this frame's sharpness / the reference's, both on the real skin in a ring of
    `ring_reach` eye distances around the hidden region; frame_ratio) ** `frame_weight`: a
    frame softer or sharper than the reference (motion blur, focus, compression) gets softer
    or sharper texture. The ratio is the geometric mix (`ring_median`) of the ratio of mean
    energies, which the ring's few strong edges (a jaw line turned into it) dominate, and of
    the median's, which follows the skin's grain. The ring, the exponent and the mix were
    chosen by leave-one-clip-out over the 9 eval clips (docs/neural.md). `flow_smooth` (crop
    pixels) smooths the flow first: a ragged flow makes ragged edges.
    """

    sigma: float = 2.0
    flow_smooth: float = 2.0
    max_weight: float = 2.5
    frame_weight: float = 0.5
    ring_reach: float = 0.1  # eye distances
    ring_median: float = 0.5
    clip_rounds: int = 3  # solves at most, aiming higher by what clipping to 0..255 took off
    clip_tolerance: float = 0.02  # until the clipped result is this close to the target
    agreement: float = 4.0  # grey levels a pixel (agreement_gate); 0 = the moved texture everywhere

    def target(self, reference: Sharpness, base: np.ndarray | None = None, ring: np.ndarray | None = None) -> float:
        """The grey-Laplacian energy the result should have over the region: the reference's
        (Sharpness), corrected by the frame drawn into, `base` (h, w, 3), on `ring` (h, w) bool
        against the reference's own ring."""
        if base is None or ring is None or not ring.any() or not reference.ring.size or self.frame_weight == 0:
            return reference.region
        return reference.region * self.frame_ratio(_laplacian_of_grey(base.astype(np.float32))[ring] ** 2,
                                                   reference.ring) ** self.frame_weight

    def frame_ratio(self, frame: np.ndarray, reference: np.ndarray) -> float:
        """How much sharper the frame is than the reference on the ring: their squared grey
        Laplacians there (n,) float32; the mean's ratio (edges: the jaw line, nostrils) to the
        power 1 - `ring_median` times the median's (the skin's grain) to `ring_median`, each
        held to 0.25-4."""
        mean = _held_ratio(float(np.mean(frame)), float(np.mean(reference)))
        if self.ring_median == 0:
            return mean
        median = _held_ratio(float(np.median(frame)), float(np.median(reference)))
        return mean ** (1.0 - self.ring_median) * median ** self.ring_median

    def transfer(self, drawn: np.ndarray, moved: np.ndarray, reference: Sharpness, where: np.ndarray,
                 base: np.ndarray | None = None, ring: np.ndarray | None = None) -> np.ndarray:
        """drawn, moved (h, w, 3) uint8 (the drawing, the moved reference), reference the
        reference frame's own Sharpness, where (h, w) float32 the blend weights, base (h, w, 3)
        uint8 the frame drawn into (None: the result is taken as pasted whole), ring (h, w) bool
        the real skin around the region (class docstring) -> (h, w, 3) uint8."""
        d, m = drawn.astype(np.float32), moved.astype(np.float32)
        a = np.asarray(where, np.float32)
        region = a > 0 if base is not None else np.ones(where.shape, bool)
        if not region.any():
            return drawn
        low_d = cv2.GaussianBlur(d, (0, 0), self.sigma)
        low_m = cv2.GaussianBlur(m, (0, 0), self.sigma)
        fine_d, fine_m = d - low_d, m - low_m
        if self.agreement > 0:  # the moved texture where it agrees with the drawing, the drawing's own elsewhere
            gate = agreement_gate(low_d, low_m, self.agreement)[..., None]
            fine_m = fine_d + gate * (fine_m - fine_d)
        target = self.target(reference, base, ring)
        # The result as it will be seen, a d + (1 - a) b, measured on grey levels: a is the same
        # for R, G and B, so its grey Laplacian is that of a grey(d) + (1 - a) grey(b).
        grey_d = _grey(d)
        rest = (1 - a) * (grey_d if base is None else _grey(base.astype(np.float32)))
        seen = _laplacian(a * grey_d + rest)[region]  # the result with nothing added
        if float(np.mean(seen ** 2)) > target:  # sharper than the footage: scale the drawing's fine part
            own = _laplacian(a * _grey(fine_d))[region]
            others = seen - own
            scale = added_weight(float(np.mean(others ** 2)), float(np.mean(own ** 2)), float(np.mean(own * others)),
                                 target)
            return np.clip(d + (min(scale, 1.0) - 1.0) * fine_d + 0.5, 0, 255).astype(np.uint8)
        add = _laplacian(a * _grey(fine_m))[region]
        energies = float(np.mean(seen ** 2)), float(np.mean(add ** 2)), float(np.mean(seen * add))
        aim = target
        for _ in range(self.clip_rounds):  # clipping to 0..255 takes energy off the brightest and darkest edges
            weight = min(added_weight(*energies, aim), self.max_weight)
            result = np.clip(d + weight * fine_m + 0.5, 0, 255).astype(np.uint8)
            got = float(np.mean(_laplacian(a * _grey(result.astype(np.float32)) + rest)[region] ** 2))
            if got >= target * (1 - self.clip_tolerance) or weight >= self.max_weight:
                break
            aim *= target / max(got, 1e-6)
        return result


def agreement_gate(low_drawn: np.ndarray, low_moved: np.ndarray, scale: float) -> np.ndarray:
    """(h, w) float32 in (0, 1]: exp(-1/2 (g / scale)^2), g the gradient magnitude (grey levels a
    pixel, RMS over R, G, B) of the difference of the coarse drawing and the coarse moved
    reference (h, w, 3) float32: 1 where the moved reference has the drawing's edges (or differs
    from it only by an even shift of colour), near 0 where its edges lie elsewhere (its lips,
    teeth or jaw line where the drawing has none): its fine texture there would be a ghost."""
    difference = low_drawn - low_moved
    gx = cv2.Sobel(difference, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(difference, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    squared = cv2.transform(gx * gx + gy * gy, np.full((1, 3), 1 / 3, np.float32))  # the mean over R, G, B
    return cv2.exp(squared * np.float32(-0.5 / scale**2))


def _held_ratio(a: float, b: float) -> float:
    """a / b held to 0.25-4 (a frame at most 4x softer or sharper than its reference)."""
    return float(np.clip(a / max(b, 1e-6), 0.25, 4.0))


def added_weight(drawn: float, moved: float, cross: float, target: float) -> float:
    """The weight w >= 0 with drawn + 2 w cross + w^2 moved = target (the mean energy of
    d + w m for two bands d, m of mean energies `drawn`, `moved` and mean product `cross`), 0
    if there is none: adding w m to a band that already shares edges with m (cross > 0) grows
    its energy by more than w^2 moved."""
    if moved <= 1e-6:
        return 0.0
    return float(max(-cross + np.sqrt(max(cross * cross + moved * (target - drawn), 0.0)), 0.0) / moved)


def _antialiased(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """A crop image low-passed (Gaussian, crop pixels) before it is sampled at the frame's pixels
    by `transform` (frame -> crop) when the crop is finer than the frame: no aliasing, no jagged
    edges on small faces."""
    scale = float(align.scale_of(transform))
    if scale <= 1.25:
        return image
    return cv2.GaussianBlur(image, (0, 0), 0.5 * np.sqrt(scale**2 - 1))


def flow_pixels(flow: np.ndarray, size: int) -> np.ndarray:
    """The warp head's flow output (0..1, model.UNet.parts) as crop pixels of a crop of `size`."""
    return (flow * 2.0 - 1.0) * (MAX_FLOW * size)


def detail_weight(lips: list[np.ndarray], size: int) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 where fine texture may be added, 0 on and LIP_GUARD around the
    lips, each (61, 2) control points in crop pixels (lip_model.CONTROLS order), soft-edged."""
    zone = np.zeros((size, size), np.uint8)
    for points in lips:
        fixed = np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(zone, [np.vstack([fixed[_OUTER_UPPER], fixed[_OUTER_LOWER][::-1]])], 255, cv2.LINE_AA, _SHIFT)
    guard = max(int(round(LIP_GUARD / CROP_SIDE * size)), 1)
    zone = cv2.dilate(zone, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * guard + 1,) * 2))
    zone = cv2.GaussianBlur(zone.astype(np.float32) / 255.0, (0, 0), guard / 2)
    return 1.0 - np.clip(zone, 0, 1)


def hidden_region_pixels(geometry: CropGeometry, transform: np.ndarray, size: int,
                         frame_shape: tuple[int, ...]) -> np.ndarray:
    """Boolean (H, W) mask of the frame pixels inside the hidden region (crop of `size` pixels)."""
    hidden = (geometry.hidden_mask(size) > 127).astype(np.uint8)
    height, width = frame_shape[:2]
    back = cv2.warpAffine(hidden, align.invert(transform), (width, height), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT)
    return back > 0
