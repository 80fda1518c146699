"""A synthetic talking clip for the evaluator's tests: the bundled portrait, its jaw opened in
step with the bundled speech.

The region from the lips down past the chin is stretched downwards by an amount that follows
the speech's smoothed loudness envelope, and the gap it opens between the lips is painted as a
dark mouth interior, so MediaPipe measures a mouth that opens and closes with the audio. The
muxed audio can be moved against the picture (`shift_ms`, SyncNet's sign: + = audio early),
frames can be given irregular timestamps (VFR), the face can be blanked out for a time span.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from lipstream.audio import SAMPLE_RATE, load_audio
from lipstream.bench.sync import shift_audio
from lipstream.face.landmarks import FaceTracker

ASSETS = Path(__file__).resolve().parents[1] / "src" / "lipstream" / "assets" / "default"
SIZE = 256
MAX_OPEN = 0.45  # jaw drop at full loudness, as a share of the mouth width
INTERIOR_RGB = (70, 25, 30)
MS = Fraction(1, 1000)  # frame timestamps in milliseconds
ENVELOPE_SMOOTH_MS = 30.0


@dataclass(frozen=True)
class MouthGeometry:
    """Where to stretch, in pixels of the SIZE x SIZE portrait."""

    lip_y: float  # between the inner lips
    chin_y: float
    centre_x: float
    half_width: float  # half the mouth-corner distance


def speech(seconds: float) -> np.ndarray:
    """The first `seconds` of the bundled speech, float32 mono 16 kHz."""
    return load_audio(ASSETS / "speech.wav")[: int(seconds * SAMPLE_RATE)]


@lru_cache(maxsize=1)
def portrait() -> tuple[np.ndarray, MouthGeometry]:
    """The bundled portrait at SIZE x SIZE RGB, and its mouth geometry (from MediaPipe)."""
    image = cv2.cvtColor(cv2.imread(str(ASSETS / "portrait.png")), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    with FaceTracker(video=False) as tracker:
        lm = tracker(image)
    geometry = MouthGeometry(
        lip_y=float((lm[13, 1] + lm[14, 1]) / 2),
        chin_y=float(lm[152, 1]),
        centre_x=float((lm[61, 0] + lm[291, 0]) / 2),
        half_width=float(abs(lm[291, 0] - lm[61, 0]) / 2),
    )
    return image, geometry


def envelope(audio: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Loudness envelope in [0, 1] at the given times: 10 ms RMS in dB, smoothed, 40 dB range."""
    hop = SAMPLE_RATE // 100
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    db = gaussian_filter1d(20 * np.log10(rms + 1e-5), ENVELOPE_SMOOTH_MS / 10)
    level = np.clip((db - (db.max() - 40)) / 40, 0, 1) ** 1.5
    return np.interp(times_s, (np.arange(n) + 0.5) / 100, level)


def open_mouth(image: np.ndarray, geometry: MouthGeometry, amount: float) -> np.ndarray:
    """The portrait with the jaw dropped by amount (0-1) x MAX_OPEN x mouth width pixels."""
    g = geometry
    drop = amount * MAX_OPEN * 2 * g.half_width
    if drop < 0.5:
        return image.copy()
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    reach = g.chin_y - g.lip_y
    vertical = np.clip(1 - (ys - g.chin_y) / reach, 0, 1) * (ys >= g.lip_y)
    across = np.clip((np.abs(xs - g.centre_x) - g.half_width) / (1.5 * g.half_width), 0, 1)
    horizontal = 0.5 * (1 + np.cos(np.pi * across))
    shift = (drop * vertical * horizontal).astype(np.float32)
    warped = cv2.remap(image, xs, ys - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gap = (ys >= g.lip_y) & (ys - shift < g.lip_y) & (np.abs(xs - g.centre_x) < 0.9 * g.half_width)
    warped[gap] = INTERIOR_RGB
    return warped


def write_talking_clip(
    path: Path,
    audio: np.ndarray,
    fps: float = 25.0,
    shift_ms: float = 0.0,
    vfr: bool = False,
    with_audio: bool = True,
    no_face_s: tuple[float, float] | None = None,
    audio_start_s: float = 0.0,
) -> Path:
    """Write an mp4 (H.264 + AAC) of the portrait mouthing `audio` (float32 mono 16 kHz).

    shift_ms moves the muxed audio against the picture (+ = audio early); vfr gives frames
    alternately 0.6 and 1.4 frame intervals; no_face_s = (start, end) shows a blank frame then;
    audio_start_s > 0 starts the audio stream that late (container timestamps), playing in sync.
    """
    image, geometry = portrait()
    duration = len(audio) / SAMPLE_RATE
    starts = _frame_starts(duration, fps, vfr)
    ends = np.append(starts[1:], duration)
    amounts = envelope(audio, (starts + ends) / 2)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=int(round(fps)))
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.time_base = video.codec_context.time_base = MS
        video.options = {"preset": "ultrafast", "crf": "18"}
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if with_audio else None
        for start, amount in zip(starts, amounts, strict=True):
            blank = no_face_s is not None and no_face_s[0] <= start < no_face_s[1]
            rgb = np.full_like(image, 200) if blank else open_mouth(image, geometry, amount)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = int(round(start * 1000))
            frame.time_base = MS
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            skip = int(round(audio_start_s * SAMPLE_RATE))
            for frame in _audio_frames(shift_audio(audio, shift_ms)[skip:], first_pts=skip):
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def _frame_starts(duration: float, fps: float, vfr: bool) -> np.ndarray:
    step = 1.0 / fps
    if not vfr:
        return np.arange(int(duration * fps)) * step
    pattern = np.array([0.6, 1.4]) * step
    steps = np.resize(pattern, int(duration * fps))
    return np.concatenate([[0.0], np.cumsum(steps)[:-1]])


def _audio_frames(audio: np.ndarray, first_pts: int = 0, size: int = 1024):
    for start in range(0, len(audio), size):
        chunk = audio[start : start + size]
        chunk = np.pad(chunk, (0, size - len(chunk)))[None, :].astype(np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = first_pts + start
        yield frame
