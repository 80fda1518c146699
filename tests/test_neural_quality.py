"""The held-out figures of `lipstream bench neural` (bench.neural_quality) on made-up frames:
texture against its blurred copy, a shifted copy, a flickering sequence."""

import cv2
import numpy as np

from lipstream.bench.neural_quality import (gradient_similarity, high_frequency_energy, laplacian_variance,
                                            mean_change, opening_quality, opening_region, psnr, region_quality,
                                            ssim)


def textured(seed: int = 0, size: int = 96) -> np.ndarray:
    """A skin-like RGB frame: smooth shading plus fine grain (a beard's worth of high frequencies)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    base = 120 + 40 * np.sin(x / 17.0) * np.cos(y / 23.0)
    grain = rng.normal(0, 18, (size, size))
    grey = np.clip(base + grain, 0, 255)
    return np.stack([grey, 0.8 * grey, 0.7 * grey], -1).astype(np.uint8)


REGION = np.zeros((96, 96), bool)
REGION[20:80, 16:80] = True


def test_sharpness_figures_are_one_for_the_real_frame_and_fall_with_blur():
    real = textured()
    soft = cv2.GaussianBlur(real, (0, 0), 1.5)
    assert laplacian_variance(soft, REGION) < 0.2 * laplacian_variance(real, REGION)
    assert high_frequency_energy(soft, REGION) < 0.2 * high_frequency_energy(real, REGION)
    same = region_quality([real], [real], [REGION])
    assert same["sharpness_ratio"] == 1.0 and same["high_frequency_ratio"] == 1.0
    assert same["gradient_similarity"] == 1.0 and same["ssim"] == 1.0 and same["psnr_db"] > 90
    blurred = region_quality([soft], [real], [REGION])
    assert blurred["sharpness_ratio"] < 0.2 and blurred["high_frequency_ratio"] < 0.2
    assert blurred["gradient_similarity"] < 0.8


def test_psnr_rewards_blur_where_the_sharpness_ratio_does_not():
    """Another take of the same skin (new grain): sharp but unlike pixel for pixel. Its blur scores
    a higher PSNR, the sharpness ratio tells them apart."""
    real, other = textured(0), textured(1)
    soft = cv2.GaussianBlur(other, (0, 0), 2.0)
    assert psnr(soft, real, REGION) > psnr(other, real, REGION) + 2
    assert ssim(other, real, REGION) < 0.5
    sharp_other = region_quality([other], [real], [REGION])["sharpness_ratio"]
    assert 0.85 < sharp_other < 1.15
    assert region_quality([soft], [real], [REGION])["sharpness_ratio"] < 0.2


def test_temporal_change_against_the_footage_own():
    base = textured().astype(np.int16)
    frames = [np.clip(base + 2 * k, 0, 255).astype(np.uint8) for k in range(5)]  # slowly brightening
    regions = [REGION] * 5
    assert mean_change([frames[0]] * 5, regions) == 0.0
    flicker = [np.clip(base + (8 if k % 2 else -8), 0, 255).astype(np.uint8) for k in range(5)]
    still = [frames[0]] * 5
    assert region_quality(frames, frames, regions)["change_vs_real"] == 1.0
    assert region_quality(flicker, frames, regions)["change_vs_real"] > 1.0
    assert region_quality(still, frames, regions)["change_vs_real"] == 0.0


def test_gradient_similarity_is_symmetric_and_bounded():
    a, b = textured(0), cv2.GaussianBlur(textured(0), (0, 0), 1.0)
    assert gradient_similarity(a, b, REGION) == gradient_similarity(b, a, REGION)
    assert 0 < gradient_similarity(a, b, REGION) < 1


def test_figures_read_only_the_region_and_its_surroundings():
    """region_quality works on the regions' box: content far from the region changes nothing."""
    rng = np.random.default_rng(3)
    reals = [rng.integers(0, 256, (120, 120, 3), dtype=np.uint8) for _ in range(3)]
    renders = [cv2.GaussianBlur(r, (0, 0), 1.0) for r in reals]
    region = np.zeros((120, 120), bool)
    region[40:80, 30:90] = True
    small = region_quality(renders, reals, [region] * 3)

    def embed(image):
        canvas = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
        canvas[100:220, 50:170] = image
        return canvas

    big_region = np.zeros((300, 260), bool)
    big_region[100:220, 50:170] = region
    assert region_quality([embed(r) for r in renders], [embed(r) for r in reals], [big_region] * 3) == small


def test_teeth_drawn_as_one_band_score_low_inside_the_opening_only_where_the_mouth_is_open():
    """A mouth opening with separate teeth (bright columns with dark gaps) on grainy skin; the
    render draws the teeth as one blurred band. Over the whole region the skin's grain holds its
    sharpness ratio above half; inside the opening it falls far lower. A closed mouth (a sliver of an opening)
    is left out, and with no open mouth there is no figure."""
    real = textured()
    real[44:56, 30:66] = 40  # the dark inside
    for x in range(31, 66, 6):
        real[45:51, x:x + 4] = 235  # upper teeth, a gap between each
    render = real.copy()
    render[44:56, 30:66] = cv2.GaussianBlur(real, (0, 0), 3.0)[44:56, 30:66]
    lips = np.array([[28, 50], [48, 42], [68, 50], [48, 58]], np.float32)  # corner, top, corner, bottom
    opening = opening_region(lips, real.shape)
    assert opening[50, 48] and opening[50, 32] and not opening[40, 48] and not opening[50, 20]
    closed = opening_region(np.array([[28, 50], [48, 49.5], [68, 50], [48, 50.5]], np.float32), real.shape)
    assert closed.sum() < 64
    whole = region_quality([render], [real], [REGION])
    inside = opening_quality([render, real], [real, real], [opening, closed])
    assert whole["sharpness_ratio"] > 0.5
    assert inside["open_frames"] == 1 and inside["sharpness_ratio"] < 0.2 and inside["gradient_similarity"] < 0.6
    assert inside["sharpness_ratio"] < 0.3 * whole["sharpness_ratio"]
    assert opening_quality([real], [real], [opening])["sharpness_ratio"] == 1.0
    assert opening_quality([render], [real], [closed]) == {"open_frames": 0, "sharpness_ratio": None,
                                                            "gradient_similarity": None, "psnr_db": None}
