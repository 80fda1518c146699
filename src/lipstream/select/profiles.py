"""Measured profiles: one row per backend (renderer, variant, precision, device) and driver.

`lipstream bench` writes them (profiles.json, with the machine they ran on); the selector reads
them. A figure that was not measured is None, never a guess.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lipstream.errors import LipstreamError, MissingProfilesError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "profiles.json"


def backend_label(renderer: str, variant: str = "") -> str:
    """'renderer', or 'renderer:variant' for renderers with several models ('neural:lite/fp32')."""
    return f"{renderer}:{variant}" if variant else renderer


@dataclass(frozen=True)
class Profile:
    """What one backend with one driver measured on one machine.

    fps: frames rendered per second (render only, with the renderer's own batching).
    driver_ms_per_frame: the driver's time per frame of audio (ms), so that
        `pipeline_fps` = frames per second through driver and renderer.
    latency_p95_ms: 95th percentile of one frame's render time (ms).
    peak_memory_mib / gpu_memory_mib: peak resident (CPU) and allocated (GPU) memory (MiB).
    model_mib: size of the model file (0 for renderers without one).
    quality_psnr_db / quality_ssim: lower face against the real held-out frames of a video avatar;
        quality_sharpness: its sharpness ratio there (Laplacian variance, render / real; 1.0 = as
        sharp as the footage; lipstream.bench.neural_quality).
    sync_offset_ms: `lipstream eval` offset of a rendered clip (SyncNet sign); sync_grade its grade.
    measured_on: the machine the figures come from when not the set's own (merged or GPU rows).
    Every figure is measured on the row's device and machine, or None: never borrowed from
    another row; `select` ranks only on what is there.
    """

    renderer: str
    driver: str
    device: str = "cpu"
    precision: str = "fp32"
    variant: str = ""
    fps: float | None = None
    driver_ms_per_frame: float | None = None
    latency_p95_ms: float | None = None
    peak_memory_mib: float | None = None
    gpu_memory_mib: float | None = None
    model_mib: float = 0.0
    quality_psnr_db: float | None = None
    quality_ssim: float | None = None
    quality_sharpness: float | None = None
    sync_offset_ms: float | None = None
    sync_grade: str | None = None
    measured_on: str = ""
    note: str = ""

    @property
    def backend(self) -> str:
        return backend_label(self.renderer, self.variant)

    @property
    def pipeline_fps(self) -> float | None:
        """Frames per second through the driver and the renderer (fps if the driver's cost is unknown)."""
        if self.fps is None or not self.driver_ms_per_frame:
            return self.fps
        return 1000.0 / (1000.0 / self.fps + self.driver_ms_per_frame)

    @property
    def quantized(self) -> bool:
        return self.precision.startswith("int")

    def label(self) -> str:
        return f"{self.backend} {self.precision} on {self.device}, driver {self.driver}"


@dataclass
class ProfileSet:
    """The profiles of one machine, with where and when they were measured."""

    profiles: list[Profile]
    machine: dict
    avatar: str = ""

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "machine": self.machine, "avatar": self.avatar,
                "profiles": [asdict(p) for p in self.profiles]}


def default_profiles_path() -> Path:
    """Where `lipstream bench` keeps this machine's profiles for `select` and `serve`:
    $LIPSTREAM_PROFILES, else profiles.json in $LIPSTREAM_CACHE or ~/.cache/lipstream."""
    if os.environ.get("LIPSTREAM_PROFILES"):
        return Path(os.environ["LIPSTREAM_PROFILES"])
    cache = os.environ.get("LIPSTREAM_CACHE") or Path.home() / ".cache" / "lipstream"
    return Path(cache) / FILE_NAME


def machine_profiles() -> list[Profile]:
    """This machine's profiles if `lipstream bench` saved usable ones, else [] (logged)."""
    try:
        return load_profiles().profiles
    except LipstreamError as exc:
        log.info("%s", exc)
        return []


def save_profiles(profile_set: ProfileSet, path: Path) -> Path:
    """Write profiles.json atomically (a temporary file renamed over the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile_set.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def load_profiles(path: Path | None = None) -> ProfileSet:
    """Read profiles.json; MissingProfilesError with the fix if it is missing or not ours."""
    path = Path(path) if path else default_profiles_path()
    if not path.is_file():
        raise MissingProfilesError(f"no measured profiles at {path}: run `lipstream bench` on this machine first")
    try:
        data = json.loads(path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        known = {f.name for f in fields(Profile)}
        profiles = [Profile(**{k: v for k, v in row.items() if k in known}) for row in data["profiles"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise MissingProfilesError(f"{path} is not a lipstream profiles file ({exc}); run `lipstream bench` again") from None
    return ProfileSet(profiles, data.get("machine", {}), data.get("avatar", ""))
