"""The avatar package: a versioned directory of memory-mapped arrays that `prepare` writes.

Layout (arrays are .npy, loaded with mmap_mode="r" so a long video costs no RAM up front):

    manifest.json       schema version, source name + sha256, kind, fps, sizes, file list
    frames.npy          (N, H, W, 3) uint8 RGB frames at `fps` (N = 1 for a photo)
    landmarks.npy       (N, 478, 2) float32 face-mesh pixel coordinates, smoothed, gaps filled
    face_boxes.npy      (N, 4) float32 face box x0, y0, x1, y1 in pixels
    mouth_boxes.npy     (N, 4) int32 lower-face region x0, y0, x1, y1 that renderers may change
    mouth_masks.npy     (N, 128, 128) uint8 soft mask of that region (255 = replace), box-relative
    bank/*.npy          video sources only: the mouth bank (see lipstream.avatar.bank)
    models/             trained networks (`lipstream train`), listed in the manifest's `models`
                        section: {"version": MODELS_VERSION, "neural": {ARCH: {..., "files":
                        {VARIANT: {"path", "bytes", "sha256"}}}}} (see lipstream.neural.store)
"""

from __future__ import annotations

import hashlib
import json
import mmap
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lipstream.errors import BadAvatarError

SCHEMA_VERSION = 1
MODELS_VERSION = 1  # of the manifest's optional `models` section
MANIFEST = "manifest.json"
MASK_SIZE = 128
ARRAYS = ("frames", "landmarks", "face_boxes", "mouth_boxes", "mouth_masks")


@dataclass
class AvatarPackage:
    """A loaded avatar package; arrays are read-only memory maps."""

    path: Path
    manifest: dict
    frames: np.ndarray
    landmarks: np.ndarray
    face_boxes: np.ndarray
    mouth_boxes: np.ndarray
    mouth_masks: np.ndarray
    bank: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def kind(self) -> str:
        """"image" (one photo) or "video"."""
        return self.manifest["kind"]

    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames in pixels."""
        return int(self.manifest["width"]), int(self.manifest["height"])

    @property
    def frame_count(self) -> int:
        return int(self.manifest["frame_count"])

    @property
    def models(self) -> dict:
        """Trained networks by family and architecture ({"neural": {"lite": {...}}}); {} if none."""
        return {k: v for k, v in (self.manifest.get("models") or {}).items() if k != "version"}


def photo_at_size(package: AvatarPackage, size: tuple[int, int]) -> AvatarPackage:
    """A photo avatar (kind "image") at size (width, height), smaller than its own: its frame
    area-averaged down, its landmarks and boxes scaled, in memory. A renderer that draws on the
    photo (warp, static) then draws the pixels a session sends rather than up to 4x as many and
    a resize after. Aspect ratio as `session.size.output_size` keeps it."""
    if package.kind != "image":
        raise ValueError("only a photo avatar is drawn at another size (a video's frames stay mapped)")
    width, height = package.size
    if size[0] >= width or size[1] >= height:
        raise ValueError(f"size {size} is not smaller than the avatar's {package.size}")
    scale = np.array([size[0] / width, size[1] / height], np.float32)
    frame = cv2.resize(np.asarray(package.frames[0]), tuple(size), interpolation=cv2.INTER_AREA)
    mouth_boxes = np.asarray(package.mouth_boxes, np.float64) * np.tile(scale, 2)
    mouth_boxes = np.hstack([np.floor(mouth_boxes[:, :2]), np.ceil(mouth_boxes[:, 2:])])
    return AvatarPackage(
        path=package.path,
        manifest={**package.manifest, "width": int(size[0]), "height": int(size[1])},
        frames=frame[None],
        landmarks=(np.asarray(package.landmarks) * scale).astype(np.float32),
        face_boxes=(np.asarray(package.face_boxes) * np.tile(scale, 2)).astype(np.float32),
        mouth_boxes=np.minimum(mouth_boxes, np.tile(size, 2)).astype(np.int32),
        mouth_masks=np.asarray(package.mouth_masks),
        bank={},
    )


def release_row(array: np.ndarray, index: int) -> None:
    """Drop row `index` of a memory-mapped array from this process's resident memory (the page
    cache keeps it), so walking through a long video costs one frame of RAM, not the whole file.
    A no-op for arrays not mapped from a file."""
    mapping = array.base
    if not isinstance(mapping, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    size = array[0].nbytes
    start = array.offset % mmap.ALLOCATIONGRANULARITY + index * size  # where np.memmap put the data
    page = start - start % mmap.PAGESIZE
    mapping.madvise(mmap.MADV_DONTNEED, page, start + size - page)


def is_package(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_package(path: str | Path) -> AvatarPackage:
    """Load and validate a package directory; raises BadAvatarError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise BadAvatarError(f"avatar {path} does not exist; make one with: lipstream prepare PHOTO_OR_VIDEO -o {path}")
    manifest = read_manifest(path)
    arrays = {name: _load_array(path, name, manifest) for name in ARRAYS}
    n = int(manifest["frame_count"])
    h, w = int(manifest["height"]), int(manifest["width"])
    expected = {
        "frames": (n, h, w, 3),
        "landmarks": (n, 478, 2),
        "face_boxes": (n, 4),
        "mouth_boxes": (n, 4),
        "mouth_masks": (n, MASK_SIZE, MASK_SIZE),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise BadAvatarError(
                f"avatar {path} is corrupt: {name}.npy has shape {arrays[name].shape}, expected {shape}; "
                "prepare it again"
            )
    bank = {key: _load_array(path, f"bank/{key}", manifest) for key in manifest.get("bank_arrays", [])}
    _check_models(path, manifest)
    return AvatarPackage(path=path, manifest=manifest, bank=bank, **arrays)


def read_manifest(path: Path) -> dict:
    try:
        data = (path / MANIFEST).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise BadAvatarError(
            f"{path} is not an avatar package (no {MANIFEST}); make one with: lipstream prepare PHOTO_OR_VIDEO -o {path}"
        ) from None
    return parse_manifest(data, str(path))


def parse_manifest(data: bytes, where: str) -> dict:
    """A package's manifest from its bytes, checked: BadAvatarError if it is corrupt or was made by
    another version of lipstream (`where` names the package in the message)."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadAvatarError(f"avatar {where} is corrupt: {MANIFEST} is not valid JSON ({exc}); prepare it again") from None
    if not isinstance(manifest, dict) or "schema" not in manifest:
        raise BadAvatarError(f"avatar {where} is corrupt: {MANIFEST} has no schema version; prepare it again")
    if manifest["schema"] != SCHEMA_VERSION:
        schema = manifest["schema"]
        newer = isinstance(schema, int) and schema > SCHEMA_VERSION
        age = "a newer" if newer else "an older" if isinstance(schema, int) and schema < SCHEMA_VERSION else "another"
        fix = "upgrade lipstream, or run lipstream prepare on its source with this one" if newer else \
            "run lipstream prepare on its source again"
        raise BadAvatarError(f"avatar {where} was made by {age} version of lipstream (package schema {schema}, "
                             f"this version reads {SCHEMA_VERSION}); {fix}")
    missing = [k for k in ("kind", "fps", "width", "height", "frame_count") if k not in manifest]
    if missing:
        raise BadAvatarError(f"avatar {where} is corrupt: {MANIFEST} lacks {', '.join(missing)}; prepare it again")
    return manifest


def _check_models(path: Path, manifest: dict) -> None:
    """Validate the optional `models` section: known version, every listed file present with its size.

    (Checksums are verified when a model is loaded: lipstream.neural.runtime.)"""
    models = manifest.get("models")
    if models is None:
        return
    retrain = f"run `lipstream train {path}` again"
    if not isinstance(models, dict) or "version" not in models:
        raise BadAvatarError(f"avatar {path} is corrupt: its manifest's models section has no version; {retrain}")
    if models["version"] != MODELS_VERSION:
        raise BadAvatarError(f"avatar {path} has models made by another version of lipstream (models version "
                             f"{models['version']}, this version reads {MODELS_VERSION}); {retrain}")
    for family, entries in models.items():
        if family == "version":
            continue
        if not isinstance(entries, dict):
            raise BadAvatarError(f"avatar {path} is corrupt: models.{family} is not a table; {retrain}")
        for arch, entry in entries.items():
            files = entry.get("files") if isinstance(entry, dict) else None
            if not isinstance(files, dict) or not files or not {"arch", "geometry", "reference"} <= set(entry):
                raise BadAvatarError(f"avatar {path} is corrupt: models.{family}.{arch} is incomplete; {retrain}")
            for variant, info in files.items():
                file = path / str(info.get("path", ""))
                if not info.get("path") or not file.is_file():
                    raise BadAvatarError(f"avatar {path} is incomplete: the {family} {arch} model's {variant} file "
                                         f"{info.get('path')} is missing; {retrain}")
                if file.stat().st_size != info.get("bytes"):
                    raise BadAvatarError(f"avatar {path} is corrupt: the {family} {arch} model's {variant} file "
                                         f"{info['path']} has {file.stat().st_size} bytes, not {info.get('bytes')}; "
                                         f"{retrain}")


def write_manifest(path: Path, manifest: dict) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _load_array(path: Path, name: str, manifest: dict) -> np.ndarray:
    file = path / f"{name}.npy"
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BadAvatarError(f"avatar {path} is incomplete: {name}.npy is missing; prepare it again") from None
    except (ValueError, OSError) as exc:
        raise BadAvatarError(f"avatar {path} is corrupt: {name}.npy can't be read ({exc}); prepare it again") from None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (package sources and model files)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
