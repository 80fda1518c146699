"""The inside of an open mouth, painted into the opening between the inner lip contours.

A dark red-brown cavity, lit a little near the lips and darkest at the back; the upper teeth
hanging from the upper lip (how far they show: the `teeth` parameter, limited by the opening),
each tooth shaded as a rounded surface with a small notch between neighbours, darker towards
the mouth corners and in the upper lip's shadow; a hint of the lower teeth and the tongue when
the mouth is wide open; a soft shadow along the lips' inner edge. Colours come from the
avatar's own lips and skin, so teeth in a dark or warm painting are not a bright white.
"""

from __future__ import annotations

import cv2
import numpy as np

from lipstream.face.mouth import EYE_OUTER_CORNERS, INNER_LOWER, INNER_UPPER, OUTER_LOWER, OUTER_UPPER
from lipstream.render.mesh_warp import SUBPIXEL_BITS, soften_seams

IVORY = np.array([240.0, 230.0, 206.0], np.float32)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
TEETH_OVER_SKIN = 1.2
TEETH_MAX_LUMA = 205.0  # teeth in shadow behind the lips are never paper white
# Sizes in eye distances.
UPPER_TEETH_SHOWN = 0.09  # upper teeth below the upper lip at teeth = 1, opening permitting
LOWER_TEETH_SHOWN = 0.02
RIM_SHADOW = 0.01
SEAM_OPACITY = 0.8  # of the dark line between closed lips
# Tooth boundaries across the upper arch as fractions of the opening's half-width, centre out;
# the teeth end (fade into the dark) at the last one.
TOOTH_EDGES = (0.0, 0.24, 0.43, 0.58, 0.7, 0.8, 0.88)
CHIN_SKIN = (18, 200, 199, 175)  # face-mesh points on the skin between the lower lip and the chin


def mouth_colours(frame: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Cavity, teeth and tongue colours (3,) float32 RGB for a face: frame (H, W, 3) uint8, landmarks (478, 2) px."""
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[list(OUTER_UPPER + OUTER_LOWER[::-1])]).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(landmarks[list(INNER_UPPER + INNER_LOWER[::-1])]).astype(np.int32)], 0)
    lips = frame[mask.astype(bool)].astype(np.float32)
    lip = np.median(lips, axis=0) if len(lips) else np.array([170.0, 100.0, 100.0], np.float32)
    chin = np.round(landmarks[list(CHIN_SKIN)].mean(axis=0)).astype(int)
    half = max(int(np.linalg.norm(landmarks[EYE_OUTER_CORNERS[0]] - landmarks[EYE_OUTER_CORNERS[1]]) * 0.04), 1)
    y = int(np.clip(chin[1], half, frame.shape[0] - half - 1))
    x = int(np.clip(chin[0], half, frame.shape[1] - half - 1))
    skin = np.median(frame[y - half : y + half + 1, x - half : x + half + 1].reshape(-1, 3), axis=0).astype(np.float32)
    luma = max(float(skin @ LUMA), 1.0)
    # Teeth are a little brighter than the skin, ivory with some of the skin's hue (the light
    # and the picture's colour cast).
    scale = min(TEETH_OVER_SKIN * luma, TEETH_MAX_LUMA) / luma
    teeth = 0.6 * IVORY * (luma * scale / float(IVORY @ LUMA)) + 0.4 * skin * scale
    return {
        "cavity": (lip * [0.32, 0.16, 0.15]).astype(np.float32),
        "teeth": np.clip(teeth, 0, 255).astype(np.float32),
        "tongue": (lip * [0.78, 0.48, 0.46]).astype(np.float32),
    }


def paint_interior(
    patch: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    teeth: float,
    eye_px: float,
    colours: dict[str, np.ndarray],
) -> None:
    """Paint the open mouth into patch (h, w, 3) uint8 RGB, in place.

    upper, lower: the inner lip contours (K, 2) in patch pixels from the left corner to the
    right one (shared end points). teeth: the teeth parameter 0..1. eye_px: the eye distance in
    pixels, the unit of all sizes. colours: from `mouth_colours`.
    """
    soften_seams(patch, [upper, lower])
    gap_px = float(np.max(lower[:, 1] - upper[:, 1]))
    strength = float(np.clip(gap_px / 2.0, 0.0, 1.0))
    if strength < 1:
        _seam(patch, (upper + lower) / 2, colours["cavity"], 1 - strength)
    polygon = np.vstack([upper, lower[-2:0:-1]])
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, patch.shape[1]), min(y1, patch.shape[0])
    if strength <= 0 or x1 - x0 < 2 or y1 - y0 < 2:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    corners = np.round((polygon - [x0, y0]) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [corners], 255, cv2.LINE_AA, SUBPIXEL_BITS)
    alpha = mask.astype(np.float32) / 255.0

    ys = np.arange(y1 - y0, dtype=np.float32)[:, None]  # rows (h, 1); per-column values are (1, w)
    xs = np.arange(x1 - x0, dtype=np.float32)[None, :]
    top = _curve(upper - [x0, y0], xs[0])[None, :]
    bottom = _curve(lower - [x0, y0], xs[0])[None, :]
    gap = np.maximum(bottom - top, 1e-3)
    left, right = upper[0, 0] - x0, upper[-1, 0] - x0
    half_width = max((right - left) / 2, 1.0)
    across = np.clip((xs - (left + right) / 2) / half_width, -1, 1)
    depth = np.clip((ys - top) / gap, 0, 1)

    radial = np.clip(across**2 + (2 * depth - 1) ** 2, 0, 1)
    colour = colours["cavity"] * (0.45 + 0.55 * radial)[..., None]
    colour = _tongue(colour, across, ys, bottom, gap, eye_px, colours["tongue"])
    if teeth > 0:
        colour = _lower_teeth(colour, across, ys, bottom, gap, teeth, half_width, eye_px, colours["teeth"])
        colour = _upper_teeth(colour, across, ys, top, gap, teeth, half_width, eye_px, colours["teeth"])

    rim = cv2.GaussianBlur(alpha, (0, 0), max(RIM_SHADOW * eye_px, 0.6))
    colour *= (0.6 + 0.4 * np.clip(2 * rim - 0.5, 0, 1))[..., None]
    region = patch[y0:y1, x0:x1].astype(np.float32)
    a = (alpha * strength)[..., None]
    patch[y0:y1, x0:x1] = np.clip(region + (colour - region) * a + 0.5, 0, 255).astype(np.uint8)


def _seam(patch: np.ndarray, line: np.ndarray, colour: np.ndarray, strength: float) -> None:
    """The thin dark line where closed lips meet, along line (K, 2) patch pixels, in place."""
    x0, y0 = np.maximum(np.floor(line.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.ceil(line.max(axis=0)).astype(int) + 3
    mask = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
    pts = np.round((line - [x0, y0]) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.polylines(mask, [pts], False, 255, 1, cv2.LINE_AA, SUBPIXEL_BITS)
    region = patch[y0:y1, x0:x1]
    mask = mask[: region.shape[0], : region.shape[1]]
    # Fainter towards the corners, where real lips meet without a visible line.
    across = np.linspace(-1, 1, mask.shape[1], dtype=np.float32)[None, :]
    a = (mask.astype(np.float32) / 255.0 * SEAM_OPACITY * strength * (1 - 0.6 * across**2))[..., None]
    line_colour = region.astype(np.float32) * 0.35 + colour * 0.65
    region[:] = np.clip(region + (line_colour - region) * a + 0.5, 0, 255).astype(np.uint8)


def _curve(points: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """y of a contour (K, 2) at each column x (linear between points, held beyond the ends)."""
    order = np.argsort(points[:, 0])
    return np.interp(cols, points[order, 0], points[order, 1]).astype(np.float32)


def _tooth_shape(across: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: brightness of a row of rounded teeth (1 at a tooth's middle) and the notch
    depth (0..1) at the gaps between teeth, for positions `across` (-1..1) of the arch."""
    a = np.abs(across)
    edges = np.asarray(TOOTH_EDGES)
    j = np.clip(np.searchsorted(edges, a) - 1, 0, len(edges) - 2)
    lo, hi = edges[j], edges[j + 1]
    frac = np.clip((a - lo) / (hi - lo), 0, 1)
    # Small teeth (a few pixels wide) get less detail, or they look like noise.
    detail = float(np.clip((TOOTH_EDGES[1] * half_width - 1) / 5, 0.3, 1))
    roundness = 1 - 0.1 * detail * (2 * frac - 1) ** 4
    gap_px = np.minimum(a - lo, hi - a) * half_width
    notch = detail * np.exp(-((gap_px / 0.6) ** 2))
    return roundness, notch


def _upper_teeth(colour, across, ys, top, gap, teeth, half_width, eye_px, tint):
    """Upper teeth hanging from the upper lip, fading into the dark towards the corners."""
    end = TOOTH_EDGES[-1]
    arch = np.sqrt(np.clip(1 - (across / (end + 0.05)) ** 2, 0, 1))
    shown = np.minimum(teeth * UPPER_TEETH_SHOWN * eye_px, 0.75 * gap) * (0.55 + 0.45 * arch)
    roundness, notch = _tooth_shape(across, half_width)
    edge = top + shown * (1 - 0.18 * notch)
    cover = np.clip(edge - ys + 0.5, 0, 1) * np.clip((end - np.abs(across)) * 10, 0, 1)
    below_lip = np.clip((ys - top) / np.maximum(0.6 * shown, 1.0), 0, 1)
    shade = roundness * (1 - 0.2 * notch) * (1.0 - 0.6 * across**2) * (0.7 + 0.3 * below_lip)
    return colour + (tint * shade[..., None] - colour) * cover[..., None]


def _lower_teeth(colour, across, ys, bottom, gap, teeth, half_width, eye_px, tint):
    """The edges of the lower front teeth just above the lower lip, in shadow; wide openings only."""
    end = TOOTH_EDGES[2]
    opened = np.clip((gap / eye_px - 0.1) / 0.06, 0, 1)
    shown = teeth * np.minimum(LOWER_TEETH_SHOWN * eye_px, 0.2 * gap) * opened
    roundness, notch = _tooth_shape(across * 1.4, half_width / 1.4)
    edge = bottom - shown * (1 - 0.2 * notch)
    fade = np.clip((end - np.abs(across)) / 0.1, 0, 1)
    cover = np.clip(ys - edge + 0.5, 0, 1) * fade * (shown > 0.3)
    shade = 0.78 * roundness * (1 - 0.15 * notch) * (1.0 - 0.8 * across**2)
    return colour + (tint * shade[..., None] - colour) * cover[..., None]


def _tongue(colour, across, ys, bottom, gap, eye_px, tint):
    """The tongue's back, low in a wide-open mouth: a soft rounded hump, lit from the front."""
    height = 0.35 * np.clip(gap - 0.08 * eye_px, 0, None) * np.sqrt(np.clip(1 - (across / 0.75) ** 2, 0, 1))
    inside = ys - (bottom - height)
    cover = np.clip(inside / np.maximum(0.35 * height, 1.0), 0, 1) * 0.9
    shade = 0.5 + 0.35 * np.clip(inside / np.maximum(height, 1.0), 0, 1)
    return colour + (tint * shade[..., None] - colour) * cover[..., None]
