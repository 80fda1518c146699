"""Small valid avatar packages for the store's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipstream.avatar.package import MASK_SIZE, SCHEMA_VERSION, write_manifest


def make_package(folder: Path, seed: int, frames: int = 2, size: int = 64, schema: int = SCHEMA_VERSION) -> Path:
    """A valid package of random arrays (`frames` frames of size x size): cheap and distinct by seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    np.save(folder / "frames.npy", rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8))
    np.save(folder / "landmarks.npy", rng.uniform(0, size, (frames, 478, 2)).astype(np.float32))
    np.save(folder / "face_boxes.npy", np.tile(np.float32([0, 0, size, size]), (frames, 1)))
    np.save(folder / "mouth_boxes.npy", np.tile(np.int32([8, 32, 56, 60]), (frames, 1)))
    np.save(folder / "mouth_masks.npy", np.full((frames, MASK_SIZE, MASK_SIZE), 255, np.uint8))
    write_manifest(folder, {"schema": schema, "name": folder.name, "kind": "video", "fps": 25, "width": size,
                            "height": size, "frame_count": frames})
    return folder
