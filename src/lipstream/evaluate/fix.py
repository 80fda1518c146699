"""Sync correction: a copy of a video whose audio is moved by a measured offset.

The video stream is copied packet for packet (no re-encoding, no quality loss); only the audio
is decoded, moved, and encoded again (AAC, at its own sample rate and channel layout). The
copy's audio starts with its first video frame and lasts as long as the picture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from lipstream.errors import BadAudioError, BadVideoError, RenderFailedError
from lipstream.evaluate.video import on_video_timeline

AAC_FRAME_SAMPLES = 1024


def write_realigned(
    video: str | os.PathLike,
    out_path: str | os.PathLike,
    offset_ms: float,
    audio: str | os.PathLike | None = None,
) -> Path:
    """Write `out_path`: `video`'s picture with its audio (or `audio`, a file that starts with
    the first frame) moved by -offset_ms, SyncNet's sign: a + offset (audio early) delays it.

    Nothing is left at out_path if writing fails (RenderFailedError).
    """
    src, dst = Path(video), Path(out_path)
    if dst.exists() and dst.resolve() == src.resolve():
        raise BadVideoError(f"--fix must write a new file, not overwrite {src}")
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    try:
        with av.open(str(src), metadata_errors="ignore") as source:
            if not source.streams.video:
                raise BadVideoError(f"{src} has no video stream")
            video_stream = source.streams.video[0]
            video_start_s, duration_s = _video_span(src)
            if audio is None:
                samples, rate, layout, audio_start_s = _decode_audio(src)
            else:
                samples, rate, layout, start = _decode_audio(Path(audio))
                audio_start_s = video_start_s + start  # a reference starts with the first frame
            moved = on_video_timeline(samples, audio_start_s - video_start_s + offset_ms / 1000.0, duration_s, rate)
            with av.open(str(tmp), "w") as out:
                out_video = out.add_stream_from_template(video_stream)
                out_audio = out.add_stream("aac", rate=rate, layout=layout)
                for packet in source.demux(video_stream):
                    if packet.dts is None:
                        continue
                    packet.stream = out_video
                    out.mux(packet)
                first_pts = int(round(video_start_s * rate))
                for frame in _frames(moved, rate, layout, first_pts):
                    out.mux(out_audio.encode(frame))
                out.mux(out_audio.encode(None))
        os.replace(tmp, dst)
    except av.FFmpegError as exc:
        raise RenderFailedError(f"could not write {dst} ({exc}); check the path, the disk and the file type") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _video_span(path: Path) -> tuple[float, float]:
    """(first frame time, duration) in s of the video stream, from its packets' timestamps."""
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
    if len(pts) < 2:
        raise BadVideoError(f"{path} has too few video frames to fix")
    times = np.array(pts, np.float64) * float(stream.time_base)
    return float(times[0]), float(times[-1] - times[0] + np.median(np.diff(times)))


def _decode_audio(path: Path) -> tuple[np.ndarray, int, str, float]:
    """All of the file's first audio stream as float32 (channels, n) at its own rate, its rate,
    its layout name, and the time (s) of its first sample."""
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise BadAudioError(f"{path} has no audio track; pass --audio with the audio to realign")
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        layout = stream.codec_context.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks, start = [], None
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                continue
            for frame in frames:
                if start is None and frame.time is not None:
                    start = float(frame.time)
                frame.pts = None
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    if not chunks:
        raise BadAudioError(f"{path} contains no audio samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate, layout, start or 0.0


def _frames(samples: np.ndarray, rate: int, layout: str, first_pts: int) -> Iterator[av.AudioFrame]:
    """AAC-sized planar float frames of (channels, n) samples, pts in 1/rate from first_pts."""
    for start in range(0, samples.shape[1], AAC_FRAME_SAMPLES):
        chunk = samples[:, start : start + AAC_FRAME_SAMPLES]
        if chunk.shape[1] < AAC_FRAME_SAMPLES:
            chunk = np.pad(chunk, ((0, 0), (0, AAC_FRAME_SAMPLES - chunk.shape[1])))
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = first_pts + start
        yield frame
