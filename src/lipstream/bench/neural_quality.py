"""How close rendered frames are to the real ones over a region, and how sharp: the figures of
`lipstream bench neural` (no pretrained network; numpy and OpenCV only, so they run anywhere).

All take RGB uint8 frames (H, W, 3) and a boolean region (H, W) per frame (the mouth and jaw).

- `psnr`, `ssim`: fidelity (PSNR in dB over the region; SSIM on grey levels, Gaussian window
  sigma 1.5, averaged over the region). Both reward blur: a soft average of the possible
  mouths scores well.
- `laplacian_variance`: the variance of the grey image's Laplacian (3x3) over the region, a
  standard focus measure; its ratio render / real (`sharpness_ratio`, median over frames) is
  1.0 for footage as sharp as the real one, below for softer, above for over-sharpened.
- `high_frequency_energy`: the spectral energy above half the Nyquist frequency (0.25
  cycles/pixel) of the region's bounding box (grey, Hann-windowed); its ratio render / real
  (`high_frequency_ratio`) tells the same as the Laplacian with no kernel's choice in it.
- `gradient_similarity`: the mean gradient-magnitude similarity (GMS of GMSD, Sobel, c = 170
  for 0-255 levels) over the region: 1.0 where edges and texture have the real frame's
  strength and place.
- `mean_change`: the mean absolute change (0-255) of the region from one frame to the next;
  its ratio to the real video's (`change_vs_real`) is 1.0 for the footage's own motion,
  above for flicker, below for a mouth that moves less.
- `opening_quality`: sharpness ratio, gradient similarity and PSNR inside the real mouth
  opening (`opening_region`: teeth, tongue, the dark inside) of the frames where it is open:
  teeth drawn as one white band score low there though the whole region may score well.
"""

from __future__ import annotations

import cv2
import numpy as np

SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
GMS_C = 170.0  # GMSD's constant 0.0026 on [0, 1] levels, for 0-255
HALF_NYQUIST = 0.25  # cycles per pixel
MIN_OPENING_PIXELS = 64  # an opening smaller than this (about 8 x 8 pixels) counts as closed


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB) of two RGB uint8 frames over a boolean region."""
    mse = float(np.mean((a[region].astype(np.float64) - b[region].astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean SSIM over `region` of two RGB frames, on grey levels with a Gaussian window (sigma 1.5)."""
    x, y = _grey(a), _grey(b)
    blur = lambda im: cv2.GaussianBlur(im, (7, 7), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    return float(s[region].mean())


def laplacian_variance(image: np.ndarray, region: np.ndarray) -> float:
    """Variance of the grey image's 3x3 Laplacian over the region (grey levels squared)."""
    return float(cv2.Laplacian(_grey(image), cv2.CV_64F, ksize=1)[region].var())


def high_frequency_energy(image: np.ndarray, region: np.ndarray) -> float:
    """Mean spectral power above HALF_NYQUIST of the region's bounding box (grey, Hann window)."""
    ys, xs = np.nonzero(region)
    box = _grey(image)[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = box.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((box - box.mean()) * window)) ** 2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    return float(power[radius > HALF_NYQUIST].sum() / box.size)


def gradient_similarity(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean gradient-magnitude similarity (GMS) of two RGB frames over the region, in (0, 1]."""
    def magnitude(image):
        grey = _grey(image)
        return np.hypot(cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3))

    ga, gb = magnitude(a), magnitude(b)
    gms = (2 * ga * gb + GMS_C) / (ga * ga + gb * gb + GMS_C)
    return float(gms[region].mean())


def mean_change(frames: list[np.ndarray], regions: list[np.ndarray]) -> float:
    """Mean absolute change (0-255) inside the region between consecutive frames."""
    diffs = [np.abs(b.astype(np.int16) - a.astype(np.int16))[m & n].mean()
             for a, b, m, n in zip(frames[:-1], frames[1:], regions[:-1], regions[1:])]
    return float(np.mean(diffs)) if diffs else 0.0


def _median_ratio(measure, renders, reals, regions) -> float:
    ratios = [measure(o, m) / max(measure(f, m), 1e-9) for o, f, m in zip(renders, reals, regions)]
    return float(np.median(ratios))


def _cropped(renders, reals, regions, margin: int = 8):
    """The frames and regions cut to the regions' common box with `margin` pixels around it:
    every figure above reads at most 3 pixels beyond the region, so they come out the same."""
    ys, xs = np.nonzero(np.any(regions, axis=0))
    if not len(ys):
        return renders, reals, regions
    y0, x0 = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    y1, x1 = ys.max() + 1 + margin, xs.max() + 1 + margin
    cut = lambda images: [np.ascontiguousarray(im[y0:y1, x0:x1]) for im in images]  # noqa: E731
    return cut(renders), cut(reals), cut(regions)


def region_quality(renders: list[np.ndarray], reals: list[np.ndarray], regions: list[np.ndarray]) -> dict:
    """All the figures of rendered frames against the real ones (module docstring), rounded."""
    renders, reals, regions = _cropped(renders, reals, regions)
    mean = lambda f: float(np.mean([f(o, r, m) for o, r, m in zip(renders, reals, regions)]))  # noqa: E731
    change, real_change = mean_change(renders, regions), mean_change(reals, regions)
    return {
        "psnr_db": round(mean(psnr), 2),
        "ssim": round(mean(ssim), 4),
        "sharpness_ratio": round(_median_ratio(laplacian_variance, renders, reals, regions), 3),
        "high_frequency_ratio": round(_median_ratio(high_frequency_energy, renders, reals, regions), 3),
        "gradient_similarity": round(mean(gradient_similarity), 4),
        "change_per_frame": round(change, 2),
        "change_vs_real": round(change / max(real_change, 1e-6), 3),
    }


def opening_region(inner_lips: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean (H, W) mask of the mouth opening: inside the inner lip contour, points (n, 2)
    float (x, y) in frame pixels, in order around the opening."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(inner_lips) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def opening_quality(renders: list[np.ndarray], reals: list[np.ndarray], openings: list[np.ndarray]) -> dict:
    """Sharpness ratio (median), gradient similarity and PSNR (means) inside the real mouth
    openings (opening_region) of the frames where they hold MIN_OPENING_PIXELS or more; None
    for each when no frame's mouth is open."""
    open_ = [k for k, m in enumerate(openings) if m.sum() >= MIN_OPENING_PIXELS]
    if not open_:
        return {"open_frames": 0, "sharpness_ratio": None, "gradient_similarity": None, "psnr_db": None}
    renders, reals, regions = _cropped([renders[k] for k in open_], [reals[k] for k in open_],
                                       [openings[k] for k in open_])
    mean = lambda f: float(np.mean([f(o, r, m) for o, r, m in zip(renders, reals, regions)]))  # noqa: E731
    return {"open_frames": len(open_),
            "sharpness_ratio": round(_median_ratio(laplacian_variance, renders, reals, regions), 3),
            "gradient_similarity": round(mean(gradient_similarity), 4), "psnr_db": round(mean(psnr), 2)}
