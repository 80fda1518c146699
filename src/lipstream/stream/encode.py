"""Encoding rendered frames for the wire: JPEG (each frame stands alone) or H.264 (one stream);
or `raw` RGB bytes for a transport that encodes them itself (WebRTC: aiortc's VP8/H.264 encoders).

H.264 uses PyAV's libx264 with `tune=zerolatency` (no B-frames, no look-ahead: one access unit
out per frame in) and pts in 16 kHz ticks, the one clock's time base. Output is Annex-B.

An `OutputLevel` lowers what goes on the wire for a client whose link can't take it all (the
server's adaptive quality): JPEG quality and scale, and the frame rate (`FrameThinner` keeps
that many frames a second of the session's, evenly spread).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.errors import RenderFailedError

FORMATS = ("jpeg", "h264")  # what a WebSocket client may ask for
RAW = "raw"  # the server's own transports only
KEYFRAME_INTERVAL_S = 2.0


@dataclass(frozen=True)
class OutputLevel:
    """What frames go out at: JPEG quality (1-100; None: the preset's), scale of the frame's
    sides (JPEG only; 1.0: the session's size) and frames per second (None: all of them)."""

    jpeg_quality: int | None = None
    scale: float = 1.0
    fps: float | None = None


class JpegEncoder:
    """Each (H, W, 3) uint8 RGB frame to JPEG bytes; every frame is a keyframe."""

    def __init__(self, quality: int):
        self.quality = int(quality)
        self.params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        self.scale = 1.0

    def set_level(self, level: OutputLevel) -> None:
        """Encode at a lower quality or scale from the next frame on (huffman tables optimised
        below the preset's quality: 5-15% fewer bytes for a little CPU)."""
        quality = level.jpeg_quality or self.quality
        self.params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        if quality < self.quality or level.scale < 1.0:
            self.params += [cv2.IMWRITE_JPEG_OPTIMIZE, 1]
        self.scale = level.scale

    def encode(self, frame: np.ndarray, pts: int) -> tuple[bytes, bool]:
        if self.scale < 1.0:
            height, width = frame.shape[:2]
            size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), self.params)
        if not ok:
            raise RenderFailedError("JPEG encoding of a frame failed; the session can't go on")
        return data.tobytes(), True

    def request_keyframe(self) -> None:
        """Nothing to do: JPEG frames are all independent."""


class H264Encoder:
    """(H, W, 3) uint8 RGB frames to H.264 Annex-B access units, pts in 16 kHz ticks."""

    def __init__(self, size: tuple[int, int], fps: float, crf: int, preset: str):
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height = size
        self.codec.pix_fmt = "yuv420p"
        self.codec.time_base = Fraction(1, SAMPLE_RATE)
        self.codec.framerate = Fraction(fps).limit_denominator(1001)
        gop = max(1, int(round(KEYFRAME_INTERVAL_S * fps)))
        self.codec.options = {"preset": preset, "tune": "zerolatency", "crf": str(crf), "g": str(gop),
                              "bframes": "0", "repeat-headers": "1", "annexb": "1"}
        self._force_key = True
        self._last_pts = -1

    def encode(self, frame: np.ndarray, pts: int) -> tuple[bytes, bool]:
        """The access unit for `frame`; pts must increase (idle frames share one, so it is nudged)."""
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video.pts = pts
        if self._force_key:
            video.pict_type = av.video.frame.PictureType.I
            self._force_key = False
        packets = self.codec.encode(video)
        data = b"".join(bytes(p) for p in packets)
        return data, any(p.is_keyframe for p in packets)

    def request_keyframe(self) -> None:
        """Make the next frame an IDR frame (after frames were dropped downstream)."""
        self._force_key = True

    def set_level(self, level: OutputLevel) -> None:
        """Nothing to change here: an H.264 stream keeps its size and quality (only the frame
        rate steps, by thinning, which the encoder sees as frames with longer durations)."""


class FrameThinner:
    """Keeps `fps` of every `source_fps` frames, evenly spread (20 of 25: four of every five)."""

    def __init__(self, source_fps: float):
        self.source_fps = source_fps
        self.fps = source_fps
        self._credit = 0.0

    def set_fps(self, fps: float | None) -> None:
        self.fps = self.source_fps if fps is None else min(fps, self.source_fps)

    def keep(self) -> bool:
        """Whether the next frame goes out."""
        self._credit += self.fps / self.source_fps
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False


class RawEncoder:
    """Each (H, W, 3) uint8 RGB frame as its bytes, unencoded (the transport encodes it)."""

    def encode(self, frame: np.ndarray, pts: int) -> tuple[bytes, bool]:
        return np.ascontiguousarray(frame).tobytes(), True

    def request_keyframe(self) -> None:
        """Nothing to do: the transport's encoder decides keyframes."""

    def set_level(self, level: OutputLevel) -> None:
        """Nothing to do: the transport's encoder decides quality (frame rate steps by thinning)."""


def make_encoder(fmt: str, size: tuple[int, int], fps: float, preset) -> JpegEncoder | H264Encoder | RawEncoder:
    """The encoder for output format `fmt` ("jpeg", "h264" or "raw") with a `Preset`'s quality."""
    if fmt == RAW:
        return RawEncoder()
    if fmt == "jpeg":
        return JpegEncoder(preset.jpeg_quality)
    return H264Encoder(size, fps, preset.h264_crf, preset.h264_preset)
