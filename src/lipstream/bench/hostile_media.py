"""Small files that claim to be huge, made on the fly for the attack bench and the adversarial tests.

- `png_bomb`: a real, valid 20000 x 20000 grey PNG of 389 KB (zlib squeezes 400 MB of zero rows
  1000:1); decoded as RGB it would be 1.2 GB.
- `long_claim_video`: a 2 KB Matroska file of two 64 x 64 MPEG-4 frames, the second stamped
  three hours after the first (time base 1/1000 s), so the container's header and packet times
  both say 3 h: prepare once turned it into 540,000 frames (the 3 h counted twice).
- `silent_flac`: a real FLAC of silence (3 h at 8 kHz is 2 MB), every sample there to decode.
"""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

THREE_HOURS_S = 3 * 3600


def png_bomb(path: Path, side: int = 20000) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then a row of black
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def long_claim_video(path: Path, seconds: float = THREE_HOURS_S) -> Path:
    """Two black 64x64 frames `seconds` apart: a tiny file whose header claims a long video."""
    return video_at_times(path, (0, int(seconds * 1000)), side=64)


def video_at_times(path: Path, times_ms, side: int) -> Path:
    """A Matroska MPEG-4 video of black side x side frames presented at `times_ms` (ms from the start)."""
    ms = Fraction(1, 1000)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = ms
        for pts in times_ms:
            frame = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, ms
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def silent_flac(path: Path, seconds: float = THREE_HOURS_S, rate: int = 8000) -> Path:
    block_s = 10
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        block = np.zeros((1, rate * block_s), np.int16)
        for i in range(int(seconds // block_s)):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * rate * block_s
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def still_video(path: Path, image: np.ndarray, seconds: float, fps: int = 25) -> Path:
    """A plain video of one RGB `image` held for `seconds` (slow enough to prepare to cancel it)."""
    height, width = (d // 2 * 2 for d in image.shape[:2])
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
        for _ in range(int(seconds * fps)):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
