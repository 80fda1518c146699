"""The held-out figures of `lipstream bench neural` (bench.neural_quality) on made-up frames:
texture against its blurred copy, a shifted copy, a flickering sequence."""

import cv2
import numpy as np

from lipstream.bench.neural_quality import (gradient_similarity, high_frequency_energy, laplacian_variance,
                                            mean_change, psnr, region_quality, ssim)


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
