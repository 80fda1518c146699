"""Mouth parameters: the contract between drivers (audio -> parameters) and renderers.

Each video frame gets one renderer-independent vector of named values:

- ``jaw_open``   0 = lips together, 1 = wide open ("aa"); linear in the inner-lip aperture
                 (see `aperture_from_jaw_open`).
- ``lip_spread`` -1 = rounded/pursed ("oo", "w"), 0 = neutral, +1 = spread ("ee"); linear in
                 mouth width relative to the avatar's neutral width.
- ``lip_close``  0 = relaxed, 1 = lips pressed together (p, b, m); overrides ``jaw_open``.
- ``teeth``      0 = no teeth shown, 1 = upper teeth fully shown (f, v, s, "ee").

A `MouthTrack` holds these for a whole clip as a (T, 4) float32 array at a frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAM_NAMES: tuple[str, ...] = ("jaw_open", "lip_spread", "lip_close", "teeth")
JAW_OPEN, LIP_SPREAD, LIP_CLOSE, TEETH = range(len(PARAM_NAMES))

# Inner-lip aperture (upper to lower inner lip midpoints) of a wide-open mouth, divided by the
# distance between the outer eye corners: the value jaw_open = 1 stands for.
APERTURE_AT_FULL_OPEN = 0.30
# Mouth width relative to the neutral width at lip_spread = -1 and +1.
WIDTH_AT_ROUNDED = 0.80
WIDTH_AT_SPREAD = 1.15

_LOW = np.array([0.0, -1.0, 0.0, 0.0], np.float32)
_HIGH = np.array([1.0, 1.0, 1.0, 1.0], np.float32)


@dataclass(frozen=True)
class MouthParams:
    """One frame's mouth parameters (see module docstring for meaning and ranges)."""

    jaw_open: float = 0.0
    lip_spread: float = 0.0
    lip_close: float = 0.0
    teeth: float = 0.0

    def to_array(self) -> np.ndarray:
        return np.array([self.jaw_open, self.lip_spread, self.lip_close, self.teeth], np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "MouthParams":
        return cls(*(float(v) for v in values))


@dataclass
class MouthTrack:
    """Mouth parameters for every video frame: `values` is (T, 4) float32 in PARAM_NAMES order."""

    values: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        self.values = clip_params(np.asarray(self.values, np.float32).reshape(-1, len(PARAM_NAMES)))

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, k: int) -> MouthParams:
        return MouthParams.from_array(self.values[k])

    @property
    def jaw_open(self) -> np.ndarray:
        return self.values[:, JAW_OPEN]

    @property
    def lip_spread(self) -> np.ndarray:
        return self.values[:, LIP_SPREAD]

    @property
    def lip_close(self) -> np.ndarray:
        return self.values[:, LIP_CLOSE]

    @property
    def teeth(self) -> np.ndarray:
        return self.values[:, TEETH]

    @classmethod
    def closed(cls, n_frames: int, fps: float) -> "MouthTrack":
        """A track with the mouth at rest for n_frames."""
        return cls(np.zeros((n_frames, len(PARAM_NAMES)), np.float32), fps)

    def effective_aperture(self) -> np.ndarray:
        """Inner-lip aperture each frame shows (normalised by eye distance), closure included."""
        return aperture_from_jaw_open(self.jaw_open * (1.0 - self.lip_close))


def clip_params(values: np.ndarray) -> np.ndarray:
    """Clamp a (..., 4) parameter array into each parameter's valid range."""
    return np.clip(values, _LOW, _HIGH).astype(np.float32, copy=False)


def aperture_from_jaw_open(jaw_open: np.ndarray | float) -> np.ndarray:
    """Normalised inner-lip aperture for a jaw_open value."""
    return np.asarray(jaw_open, np.float32) * APERTURE_AT_FULL_OPEN


def params_from_measures(aperture: np.ndarray, width_ratio: np.ndarray) -> np.ndarray:
    """Mouth parameters (T, 4) from measured mouth shape.

    aperture: inner-lip aperture / outer-eye-corner distance, (T,).
    width_ratio: mouth-corner distance / the same face's neutral mouth-corner distance, (T,).
    Teeth visibility is not measurable from landmarks; it is estimated from the aperture.
    """
    aperture = np.asarray(aperture, np.float32)
    width_ratio = np.asarray(width_ratio, np.float32)
    jaw = aperture / APERTURE_AT_FULL_OPEN
    spread = np.where(
        width_ratio >= 1.0,
        (width_ratio - 1.0) / (WIDTH_AT_SPREAD - 1.0),
        (width_ratio - 1.0) / (1.0 - WIDTH_AT_ROUNDED),
    )
    close = np.zeros_like(jaw)  # pressing is not visible in landmarks
    teeth = np.clip(jaw * 2.0, 0.0, 1.0)
    return clip_params(np.stack([jaw, spread, close, teeth], axis=-1))
