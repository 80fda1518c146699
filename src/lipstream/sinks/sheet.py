"""Contact sheets: a grid of frames in one PNG, to look at a rendered clip at a glance."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from lipstream.errors import BadVideoError


def contact_sheet(frames: list[np.ndarray], labels: list[str], columns: int = 8, tile_width: int = 160) -> np.ndarray:
    """Frames (H, W, 3) uint8 RGB laid out in a grid, each labelled in its corner; returns RGB uint8."""
    h, w = frames[0].shape[:2]
    tile_h = int(round(tile_width * h / w))
    rows = -(-len(frames) // columns)
    sheet = np.full((rows * tile_h, columns * tile_width, 3), 255, np.uint8)
    for i, (frame, label) in enumerate(zip(frames, labels)):
        tile = cv2.resize(frame, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(i, columns)
        sheet[r * tile_h : (r + 1) * tile_h, c * tile_width : (c + 1) * tile_width] = tile
    return sheet


def video_contact_sheet(video: str | Path, out_png: str | Path, every: int = 4, seconds: float = 4.0,
                        start_s: float = 0.0, columns: int = 8, crop: tuple[int, int, int, int] | None = None) -> Path:
    """Every `every`-th frame of `seconds` of a video from `start_s`, labelled with its time.

    crop: optional (x0, y0, x1, y1) region of each frame to show (e.g. the lower face).
    """
    frames, labels = [], []
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            for k, frame in enumerate(container.decode(stream)):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else k / float(stream.average_rate)
                if t < start_s - 1e-6 or k % every:
                    continue
                if t >= start_s + seconds - 1e-6:
                    break
                image = frame.to_ndarray(format="rgb24")
                if crop:
                    x0, y0, x1, y1 = crop
                    image = np.ascontiguousarray(image[y0:y1, x0:x1])
                frames.append(image)
                labels.append(f"{t:.2f}s")
    except (av.FFmpegError, IndexError) as exc:
        raise BadVideoError(f"{video} could not be read as a video ({exc})") from exc
    if not frames:
        raise BadVideoError(f"{video} has no frames between {start_s:g} s and {start_s + seconds:g} s")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(contact_sheet(frames, labels, columns), cv2.COLOR_RGB2BGR))
    return out_png
