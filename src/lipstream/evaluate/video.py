"""Reading a video for sync evaluation: lip measures per frame, and the audio on the video's timeline.

Time zero is the presentation time of the first video frame. Every frame is placed by its
container timestamp, so variable-frame-rate input and streams that start at different times
(an audio track that starts 300 ms after the picture, say) are measured as they play, not as
if frame k were at k / fps. Frames are decoded and tracked one at a time, so a long video
never sits in memory; above `MAX_TRACKED_FPS` only every n-th frame is tracked (lips move
slower than that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.io import load_audio
from lipstream.errors import BadAudioError, BadVideoError
from lipstream.face.landmarks import FaceTracker
from lipstream.face.mouth import measure_mouth

MAX_TRACKED_FPS = 30.0
TIMESTAMP_SLACK_S = 0.002  # container timestamps are often rounded to the millisecond
# Outer-eye-corner distance below which MediaPipe's lip landmarks are too coarse to time lips.
MIN_EYE_DISTANCE_PX = 24.0
MIN_FACE_SHARE = 0.2  # of tracked frames; below it the video has "no face"
# A reference audio may differ in length from the video by this much (encoder padding, a
# trimmed tail); beyond it, it is most likely not the audio of this video.
MAX_LENGTH_MISMATCH_S = 1.0

AudioInput = str | os.PathLike | np.ndarray | None


@dataclass
class VideoInfo:
    """What the container says about the video stream, and what decoding found."""

    path: str
    width: int
    height: int
    fps: float  # average frames per second over the stream
    duration_s: float
    n_frames: int
    variable_frame_rate: bool
    codec: str


@dataclass
class LipTrack:
    """Lip measures of the tracked frames, in presentation order (N frames).

    times_s: (N,) float64, middle of each frame's display interval, s from the first frame.
    aperture, width: (N,) float32, inner-lip opening and mouth-corner distance divided by the
    outer-eye-corner distance; NaN where no face was found.
    eye_distance_px: (N,) float32 outer-eye-corner distance in pixels, NaN where no face.
    """

    times_s: np.ndarray
    aperture: np.ndarray
    width: np.ndarray
    eye_distance_px: np.ndarray

    @property
    def has_face(self) -> np.ndarray:
        """(N,) bool: frames where a face was found."""
        return np.isfinite(self.aperture)


@dataclass
class Clip:
    """A video ready for evaluation: its lips, and its audio on the same timeline.

    audio: float32 mono 16 kHz; sample 0 plays with the first video frame; padded with
    silence or trimmed to the video's duration. audio_start_s: where the audio stream began
    relative to the first video frame, from container timestamps (0 for a separate file).
    """

    info: VideoInfo
    lips: LipTrack
    audio: np.ndarray
    audio_source: str
    audio_start_s: float


def read_clip(video: str | os.PathLike, audio: AudioInput = None) -> Clip:
    """Decode `video`, track the lips in its frames and line up its audio.

    `audio` is None (use the video's own audio track), a path to any audio file, or float32
    mono samples at 16 kHz (shape (n,)); a separate audio is taken to start with the first
    video frame. Raises BadVideoError or BadAudioError with what to do.
    """
    path = Path(video)
    info, lips, own_audio_start = _read_video(path)
    _check_face(path, lips)
    if audio is None:
        if own_audio_start is None:
            raise BadAudioError(
                f"{path} has no audio track; pass the audio it should play with (--audio speech.wav)"
            )
        samples = load_audio(path)
        start_s = own_audio_start
        source = "own audio track"
    else:
        samples = load_audio(audio, SAMPLE_RATE) if isinstance(audio, np.ndarray) else load_audio(audio)
        start_s = 0.0
        source = "audio array" if isinstance(audio, np.ndarray) else str(audio)
        _check_length(path, info, len(samples) / SAMPLE_RATE)
    return Clip(info, lips, on_video_timeline(samples, start_s, info.duration_s), source, start_s)


def on_video_timeline(
    samples: np.ndarray, start_s: float, duration_s: float, rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Audio (..., n) at `rate` that starts `start_s` after the first video frame, as float32
    (..., duration*rate) starting at the first frame: silence before it begins and after it ends."""
    n_out = int(round(duration_s * rate))
    lead = int(round(start_s * rate))
    out = np.zeros(samples.shape[:-1] + (n_out,), np.float32)
    src = samples[..., max(0, -lead) :]
    begin = max(0, lead)
    count = max(0, min(src.shape[-1], n_out - begin))
    out[..., begin : begin + count] = src[..., :count]
    return out


def _read_video(path: Path) -> tuple[VideoInfo, LipTrack, float | None]:
    """Info, lip track, and the audio stream's start (s from the first frame; None if no audio)."""
    if not path.is_file():
        raise BadVideoError(f"{path}: no such file")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise BadVideoError(f"{path} has no video stream; give a video of a talking face")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            times, measures = _track(_decoded(container, stream))
            codec, width, height = stream.codec_context.name, stream.width, stream.height
        audio_start = _audio_start_s(path)
    except av.FFmpegError as exc:
        raise BadVideoError(f"{path} could not be read as a video ({exc}); is it a media file?") from exc
    if len(times) < 2:
        raise BadVideoError(f"{path} has {len(times)} decodable video frame(s); give a real video")
    video_start = times[0]
    starts = np.array(times) - video_start
    frame_s = np.diff(starts)
    typical = float(np.median(frame_s))
    durations = np.append(frame_s, typical)
    info = VideoInfo(
        path=str(path),
        width=width,
        height=height,
        fps=float((len(starts) - 1) / starts[-1]) if starts[-1] > 0 else 0.0,
        duration_s=float(starts[-1] + typical),
        n_frames=len(starts),
        variable_frame_rate=bool(np.ptp(frame_s) > 0.1 * typical),
        codec=codec,
    )
    tracked = np.array([k for k, _ in measures], int)
    values = np.array([m for _, m in measures], np.float32).reshape(-1, 3)
    lips = LipTrack(
        times_s=starts[tracked] + durations[tracked] / 2,
        aperture=values[:, 0],
        width=values[:, 1],
        eye_distance_px=values[:, 2],
    )
    return info, lips, None if audio_start is None else audio_start - video_start


def _decoded(container: av.container.InputContainer, stream) -> Iterator[av.VideoFrame]:
    """Decoded frames of the stream in presentation order, skipping packets the decoder rejects."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue
        yield from (f for f in frames if f.time is not None)


def _track(frames: Iterator[av.VideoFrame]) -> tuple[list[float], list[tuple[int, tuple]]]:
    """Presentation times (s) of all frames, and (index, (aperture, width, eye px)) of tracked ones."""
    times: list[float] = []
    measures: list[tuple[int, tuple]] = []
    next_due = -np.inf
    with FaceTracker(video=True) as tracker:
        for k, frame in enumerate(frames):
            times.append(float(frame.time))
            if frame.time + TIMESTAMP_SLACK_S < next_due:
                continue
            next_due = max(next_due, frame.time) + 1.0 / MAX_TRACKED_FPS
            m = measure_mouth(tracker(frame.to_ndarray(format="rgb24")))
            measures.append((k, (m.aperture[0], m.width[0], m.eye_distance[0])))
    return times, measures


def _audio_start_s(path: Path) -> float | None:
    """Presentation time (s) of the first decoded audio frame, None if there is no audio track."""
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            return None
        for packet in container.demux(container.streams.audio[0]):
            try:
                for frame in packet.decode():
                    if frame.time is not None:
                        return float(frame.time)
            except av.InvalidDataError:
                continue
    return None


def _check_face(path: Path, lips: LipTrack) -> None:
    share = float(lips.has_face.mean()) if len(lips.times_s) else 0.0
    if share < MIN_FACE_SHARE:
        raise BadVideoError(
            f"no face found in {100 * (1 - share):.0f}% of the frames of {path}; the evaluator "
            "needs the speaker's face visible (roughly frontal) in most of the video"
        )
    eye_px = float(np.nanmedian(lips.eye_distance_px))
    if eye_px < MIN_EYE_DISTANCE_PX:
        raise BadVideoError(
            f"the face in {path} is too small to read the lips (eyes {eye_px:.0f} px apart, "
            f"at least {MIN_EYE_DISTANCE_PX:.0f} px needed); use a higher-resolution video "
            "or crop it around the face"
        )


def _check_length(path: Path, info: VideoInfo, audio_s: float) -> None:
    if abs(audio_s - info.duration_s) > MAX_LENGTH_MISMATCH_S:
        raise BadAudioError(
            f"the audio is {audio_s:.2f} s long but {path} is {info.duration_s:.2f} s; give the "
            "audio that plays with this video, trimmed to it (a difference of up to "
            f"{MAX_LENGTH_MISMATCH_S:.0f} s is accepted)"
        )
