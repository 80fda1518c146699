"""Video file output: H.264 video + the input's audio through PyAV, written atomically.

Frames are uint8 H x W x 3 RGB at a constant fps; frame k gets pts k in a 1/fps time base, so
it is shown from k/fps to (k+1)/fps, exactly over the audio samples the clock gives it. The audio
is the input's own, at its own rate and channels: AAC by default (at the input's rate where AAC
has it), PCM (bit-exact for 16-bit input) or FLAC when asked (.mov / .mkv for PCM), or the
input file's own audio packets copied unchanged (`copy_audio_from`). The file is written beside
the target under a temporary name and renamed on success: a failed or interrupted render never
leaves a half-written output.
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

from lipstream.audio.pcm import to_float
from lipstream.errors import NotSupportedError, RenderFailedError

# x264 constant-rate factors and presets for the --quality option.
QUALITY = {
    "fast": {"crf": "26", "preset": "ultrafast"},
    "standard": {"crf": "20", "preset": "superfast"},
    "high": {"crf": "16", "preset": "medium"},
}
AUDIO_CODECS = ("aac", "pcm", "flac", "copy")
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
PCM_CONTAINERS = ("mov", "matroska")
# Per channel: 192 kbit/s keeps a speech waveform's correlation with its source above 0.999
# (0.9998 for speech at 48 kHz stereo, tests/test_output_audio.py; 128 kbit/s gave 0.9987); AAC allows at
# most 6144 bits per 1024-sample frame and channel (6 bits per sample).
AAC_BITRATE_PER_CHANNEL = 192_000
AAC_MAX_BITS_PER_SAMPLE = 6
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_FALLBACK_RATE = 48_000  # for input rates AAC lacks
AUDIO_BLOCK_SAMPLES = 1024
ENCODE_QUEUE_FRAMES = 8
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


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


def container_format(path: Path) -> str:
    """The container for a file name: mp4 (.mp4, .m4v), mov or matroska (.mkv)."""
    try:
        return CONTAINERS[path.suffix.lower()]
    except KeyError:
        raise NotSupportedError(f"can't write {path.name}: give a name ending in "
                                f"{', '.join(CONTAINERS)}") from None


def check_audio_codec(path: Path, codec: str) -> None:
    """NotSupportedError now (before any work) if `codec` can't go into the file `path` names."""
    if codec not in AUDIO_CODECS:
        raise NotSupportedError(f"unknown audio codec {codec!r}; choose one of: {', '.join(AUDIO_CODECS)}")
    if codec == "pcm" and container_format(path) not in PCM_CONTAINERS:
        raise NotSupportedError(f"PCM audio can't go into {path.suffix}; write a .mov or .mkv file, or use "
                                "--audio-codec flac or aac")


class Mp4Writer:
    """Writes frames and one audio track into an mp4 (or .mov / .mkv); use as a context manager.

    Audio comes with the frames (`write(frame, audio)`: the frame's (n, channels) int16 or
    float32 samples at audio_rate, muxed back to back from time 0) or, with copy_audio_from, as
    that file's own first audio track, copied packet by packet. audio_codec: "aac", "pcm" or
    "flac" (see the module docstring). Frames are encoded on a background thread (PyAV releases
    the GIL while encoding), so rendering the next frame overlaps encoding this one; at most
    ENCODE_QUEUE_FRAMES wait in between.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], audio_rate: int | None = None,
                 audio_channels: int = 1, quality: str = "standard", audio_codec: str = "aac",
                 copy_audio_from: str | Path | None = None):
        self.path = Path(path)
        check_writable(self.path)
        fmt = container_format(self.path)
        check_audio_codec(self.path, "copy" if copy_audio_from else audio_codec)
        if quality not in QUALITY:
            raise NotSupportedError(f"unknown quality {quality!r}; choose one of: {', '.join(QUALITY)}")
        width, height = size
        if width % 2 or height % 2:
            raise NotSupportedError(f"H.264 needs even frame sizes, not {width}x{height}")
        fd, tmp = tempfile.mkstemp(suffix=self.path.suffix, prefix=f".{self.path.stem}.", dir=self.path.parent or ".")
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), "w", format=fmt)
        rate = fps_fraction(fps)
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = 1 / rate
        self._video.options = dict(QUALITY[quality])
        self._audio_parts: list[np.ndarray] = []
        self._audio_rate, self._audio_channels = audio_rate, audio_channels
        self._audio_stream = self._copy_from = None
        try:
            if copy_audio_from is not None:
                self._copy_from = av.open(str(copy_audio_from))
                self._audio_stream = self._container.add_stream_from_template(self._copy_from.streams.audio[0])
            elif audio_rate is not None:
                self._audio_stream = self._add_audio_stream(audio_codec, audio_rate, audio_channels)
        except (av.FFmpegError, ValueError, IndexError) as exc:
            self.abort()
            raise NotSupportedError(f"can't put that audio into {self.path.suffix} ({exc}); use --audio-codec aac, "
                                    "or write a .mkv file") from None
        self._frames = 0
        self._queue: queue.Queue = queue.Queue(ENCODE_QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._encoder = threading.Thread(target=self._encode_frames, name="mp4-encoder", daemon=True)
        self._encoder.start()

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Append one RGB uint8 frame (H, W, 3) of the writer's size, and the (n, channels)
        samples it shows (kept for the audio track)."""
        self._raise_encoder_error()
        if audio is not None and len(audio) and self._audio_stream is not None and self._copy_from is None:
            self._audio_parts.append(audio)
        self._queue.put(np.ascontiguousarray(frame))

    def close(self) -> Path:
        """Flush the encoders, add the audio and move the file into place; returns its path."""
        try:
            self._stop_encoder()
            self._raise_encoder_error()
            self._container.mux(self._video.encode())
            if self._copy_from is not None:
                self._copy_audio()
            elif self._audio_stream is not None:
                self._write_audio(self._audio_stream)
            self._container.close()
        except av.FFmpegError as exc:
            self.abort()
            raise RenderFailedError(f"writing {self.path} failed: {exc}") from exc
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        self._stop_encoder()
        for container in (self._container, self._copy_from):
            try:
                if container is not None:
                    container.close()
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
        if getattr(self, "_encoder", None) is not None and self._encoder.is_alive():
            self._queue.put(None)
            self._encoder.join()

    def _raise_encoder_error(self) -> None:
        if self._error is not None:
            raise RenderFailedError(f"encoding {self.path} failed: {self._error}") from self._error

    def _add_audio_stream(self, codec: str, rate: int, channels: int) -> av.audio.stream.AudioStream:
        if codec == "aac":
            rate = rate if rate in AAC_RATES else AAC_FALLBACK_RATE
            stream = self._container.add_stream("aac", rate=rate)
            stream.bit_rate = channels * min(AAC_BITRATE_PER_CHANNEL, AAC_MAX_BITS_PER_SAMPLE * rate)
        else:
            stream = self._container.add_stream("pcm_s16le" if codec == "pcm" else "flac", rate=rate)
        stream.layout = _LAYOUTS[channels]
        return stream

    def _write_audio(self, stream: av.audio.stream.AudioStream) -> None:
        """Encode the collected samples (PyAV converts the sample format and rate, and blocks
        them into the codec's frame size)."""
        if not self._audio_parts:
            return
        samples = np.concatenate(self._audio_parts)
        self._audio_parts = []
        pcm = stream.codec_context.name == "pcm_s16le" or stream.codec_context.name == "flac"
        if samples.dtype != np.int16 and pcm:
            samples = np.round(to_float(samples) * 32767.0).astype(np.int16)
        fmt = "s16" if samples.dtype == np.int16 else "flt"
        layout = _LAYOUTS[self._audio_channels]
        for start in range(0, len(samples), AUDIO_BLOCK_SAMPLES):
            chunk = np.ascontiguousarray(samples[start : start + AUDIO_BLOCK_SAMPLES].reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout=layout)
            frame.sample_rate = self._audio_rate
            frame.pts = start
            frame.time_base = Fraction(1, self._audio_rate)
            self._container.mux(stream.encode(frame))
        self._container.mux(stream.encode(None))

    def _copy_audio(self) -> None:
        """The source file's first audio track, packet by packet, from time 0."""
        source = self._copy_from.streams.audio[0]
        start = None
        for packet in self._copy_from.demux(source):
            if packet.dts is None:
                continue
            start = packet.pts if start is None else start
            packet.pts -= start
            packet.dts -= start
            packet.stream = self._audio_stream
            self._container.mux(packet)
        self._copy_from.close()
        self._copy_from = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
