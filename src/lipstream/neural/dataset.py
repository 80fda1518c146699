"""The training set of one avatar: aligned crops, lip sketches and the hidden mask, as a .npz.

`build_dataset` runs where lipstream's face and avatar modules run (OpenCV); `load_dataset`
needs numpy alone (plus Pillow or OpenCV for JPEG-packed crops), so training can run on a
machine that has torch but none of the media libraries. Arrays in the file (N frames, for
each crop size S in `sizes`):

    meta               uint8 JSON bytes: avatar name, fps, sizes, heldout_start, reference,
                       crop geometry (geometry.CropGeometry.to_dict), neutral mouth width
    crops_S            (N, S, S, 3) uint8 RGB aligned crops            (or, JPEG-packed:)
    jpeg_S, jpeg_offsets_S   (bytes,) uint8 and (N + 1,) int64: crop k is jpeg_S[o[k]:o[k+1]]
    sketch_S           (N, 2, S, S) uint8 lip sketch (geometry.draw_sketch)
    hidden_S           (S, S) uint8 hidden region (255 = hidden)
    params             (N, 4) float32 mouth parameters fitted by each frame's lip model
    controls           (N, 61, 2) float32 the lip model's control points redrawn from them (frame px)

Held out: the last HELDOUT_SHARE of the frames by time (frames heldout_start..N-1), never
trained on. The reference frame is a training frame with the mouth somewhat open.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipstream.errors import NotSupportedError

HELDOUT_SHARE = 0.2
REFERENCE_OPENING_QUANTILE = 0.7
DEFAULT_SIZES = (256, 128)

Progress = Callable[[int, int], None]


def heldout_start(n: int, share: float = HELDOUT_SHARE) -> int:
    """First held-out frame of n: the last `share` of the frames by time (at least one each side)."""
    return int(min(max(round(n * (1 - share)), 1), n - 1)) if n > 1 else n


def lip_controls(landmarks: np.ndarray, params: np.ndarray, neutral_width: float | None,
                 model=None) -> np.ndarray:
    """The lip model's control points (61, 2) float32 frame pixels of a face (478, 2) for
    mouth parameters (4,): what the neural renderer draws, in training and when driven."""
    from lipstream.motion.lip_model import LipModel

    model = model or LipModel(landmarks, neutral_width)
    return model.controls(params)


def build_dataset(package, sizes=DEFAULT_SIZES, jpeg_quality: int | None = None,
                  progress: Progress | None = None) -> dict[str, np.ndarray]:
    """The dataset arrays (see module docstring) of a video AvatarPackage."""
    import cv2

    from lipstream.motion.lip_model import CONTROLS, LipModel
    from lipstream.neural.geometry import crop_frame, crop_geometry, draw_sketch

    landmarks = np.asarray(package.landmarks, np.float32)
    n = len(landmarks)
    split = heldout_start(n)
    neutral = package.manifest.get("neutral_mouth_width")
    geometry = crop_geometry(landmarks[:split])
    params = np.empty((n, 4), np.float32)
    controls = np.empty((n, len(CONTROLS), 2), np.float32)
    crops = {s: np.empty((n, s, s, 3), np.uint8) for s in sizes}
    sketches = {s: np.empty((n, 2, s, s), np.uint8) for s in sizes}
    transforms = {s: geometry.transforms(landmarks, s) for s in sizes}
    for k in range(n):
        model = LipModel(landmarks[k], neutral)
        params[k] = model.fit(landmarks[k])
        controls[k] = lip_controls(landmarks[k], params[k], neutral, model)
        frame = np.asarray(package.frames[k])
        for s in sizes:
            crops[s][k] = crop_frame(frame, transforms[s][k], s)
            sketches[s][k] = draw_sketch(controls[k], transforms[s][k], s)
        if progress:
            progress(k + 1, n)
    opening = params[:split, 0] * (1 - params[:split, 2])
    reference = int(np.argmin(np.abs(opening - np.quantile(opening, REFERENCE_OPENING_QUANTILE))))
    meta = {"name": package.name, "fps": package.fps, "sizes": list(sizes), "frames": n, "heldout_start": split,
            "reference": reference, "geometry": geometry.to_dict(), "neutral_mouth_width": neutral}
    out: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                                  "params": params, "controls": controls}
    for s in sizes:
        out[f"sketch_{s}"] = sketches[s]
        out[f"hidden_{s}"] = geometry.hidden_mask(s)
        if jpeg_quality is None:
            out[f"crops_{s}"] = crops[s]
            continue
        blobs = [cv2.imencode(".jpg", cv2.cvtColor(c, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])[1]
                 for c in crops[s]]
        out[f"jpeg_{s}"] = np.concatenate([b.reshape(-1) for b in blobs]).astype(np.uint8)
        out[f"jpeg_offsets_{s}"] = np.cumsum([0] + [b.size for b in blobs]).astype(np.int64)
    return out


def save_dataset(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write the arrays to a compressed .npz (written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def read_meta(arrays) -> dict:
    return json.loads(bytes(np.asarray(arrays["meta"], np.uint8)).decode())


def load_dataset(source, size: int) -> dict:
    """The dataset at crop size `size` from a .npz path or a dict of arrays: a dict with
    'meta' (dict), 'crops' (N, S, S, 3) uint8, 'sketch' (N, 2, S, S) uint8, 'hidden' (S, S)
    uint8, 'params' (N, 4) float32."""
    arrays = np.load(source, allow_pickle=False) if isinstance(source, (str, Path)) else source
    meta = read_meta(arrays)
    if size not in meta["sizes"]:
        raise NotSupportedError(f"the dataset has crops of {meta['sizes']} pixels, not {size}: build it again for "
                                "this network (lipstream train AVATAR --dataset-only FILE)")
    if f"crops_{size}" in arrays:
        crops = np.asarray(arrays[f"crops_{size}"])
    else:
        blob, offsets = np.asarray(arrays[f"jpeg_{size}"]), np.asarray(arrays[f"jpeg_offsets_{size}"])
        crops = np.stack([_decode_jpeg(blob[offsets[k]:offsets[k + 1]]) for k in range(len(offsets) - 1)])
    return {"meta": meta, "crops": crops, "sketch": np.asarray(arrays[f"sketch_{size}"]),
            "hidden": np.asarray(arrays[f"hidden_{size}"]), "params": np.asarray(arrays["params"])}


def _decode_jpeg(data: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) from JPEG bytes, with OpenCV or else Pillow."""
    try:
        import cv2
    except ImportError:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
