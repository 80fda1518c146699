"""MP4 output: H.264 video + AAC audio through PyAV, written atomically.

Frames are uint8 H x W x 3 RGB at a constant fps; frame k gets pts k in a 1/fps time base, so
it is shown from k/fps to (k+1)/fps, exactly over the audio samples the clock gives it. The file
is written beside the target under a temporary name and renamed on success: a failed or
interrupted render never leaves a half-written output.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.errors import RenderFailedError

# x264 constant-rate factors and presets for the --quality option.
QUALITY = {
    "fast": {"crf": "26", "preset": "ultrafast"},
    "standard": {"crf": "20", "preset": "superfast"},
    "high": {"crf": "16", "preset": "medium"},
}
AUDIO_BITRATE = 96_000
AAC_FRAME_SAMPLES = 1024
ENCODE_QUEUE_FRAMES = 8


def check_writable(path: Path) -> None:
    """Raise RenderFailedError now if `path` can't be written, before any work is done."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise RenderFailedError(f"{path} is a directory; give a file name such as {path / 'out.mp4'}")
    if not parent.is_dir():
        raise RenderFailedError(f"can't write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise RenderFailedError(f"can't write {path}: permission denied")


def fps_fraction(fps: float) -> Fraction:
    """fps as an exact fraction: 25 -> 25, 29.97 -> 30000/1001 (NTSC rates), else the closest."""
    if abs(fps - round(fps)) < 1e-6:
        return Fraction(round(fps))
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
    if abs(float(ntsc) - fps) < 1e-3:
        return ntsc
    return Fraction(fps).limit_denominator(1001)


class Mp4Writer:
    """Writes frames and one audio track into an mp4; use as a context manager.

    audio: float32 mono 16 kHz samples of the whole clip (muxed from time 0). Frames are
    encoded on a background thread (PyAV releases the GIL while encoding), so rendering the
    next frame overlaps encoding this one; at most ENCODE_QUEUE_FRAMES wait in between.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], audio: np.ndarray | None,
                 quality: str = "standard"):
        self.path = Path(path)
        check_writable(self.path)
        if quality not in QUALITY:
            raise RenderFailedError(f"unknown quality {quality!r}; choose one of {', '.join(QUALITY)}")
        width, height = size
        if width % 2 or height % 2:
            raise RenderFailedError(f"H.264 needs even frame sizes, not {width}x{height}")
        fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=f".{self.path.stem}.", dir=self.path.parent or ".")
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), "w", format="mp4")
        rate = fps_fraction(fps)
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = 1 / rate
        self._video.options = dict(QUALITY[quality])
        self._audio = audio
        self._audio_stream = None
        if audio is not None:
            self._audio_stream = self._container.add_stream("aac", rate=SAMPLE_RATE)
            self._audio_stream.layout = "mono"
            self._audio_stream.bit_rate = AUDIO_BITRATE
        self._frames = 0
        self._queue: queue.Queue = queue.Queue(ENCODE_QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._encoder = threading.Thread(target=self._encode_frames, name="mp4-encoder", daemon=True)
        self._encoder.start()

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame (H, W, 3) of the writer's size."""
        self._raise_encoder_error()
        self._queue.put(np.ascontiguousarray(frame))

    def close(self) -> Path:
        """Flush the encoders, add the audio and move the file into place; returns its path."""
        self._stop_encoder()
        self._raise_encoder_error()
        self._container.mux(self._video.encode())
        if self._audio_stream is not None:
            self._write_audio(self._audio_stream, self._audio)
        self._container.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        self._stop_encoder()
        try:
            self._container.close()
        except av.FFmpegError:
            pass
        self._tmp.unlink(missing_ok=True)

    def _encode_frames(self) -> None:
        while (frame := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure so writers never block
            try:
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = self._frames
                self._frames += 1
                self._container.mux(self._video.encode(video_frame))
            except BaseException as exc:  # re-raised on the caller's thread
                self._error = exc

    def _stop_encoder(self) -> None:
        if self._encoder.is_alive():
            self._queue.put(None)
            self._encoder.join()

    def _raise_encoder_error(self) -> None:
        if self._error is not None:
            raise RenderFailedError(f"encoding {self.path} failed: {self._error}") from self._error

    def _write_audio(self, stream: av.audio.stream.AudioStream, audio: np.ndarray) -> None:
        samples = np.clip(audio, -1, 1).astype(np.float32)
        for start in range(0, len(samples), AAC_FRAME_SAMPLES):
            chunk = samples[start : start + AAC_FRAME_SAMPLES]
            frame = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            self._container.mux(stream.encode(frame))
        self._container.mux(stream.encode(None))

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
