"""Driver accuracy: how well each driver's mouth opening follows a real mouth, from the audio alone.

For every video in a folder: the measured inner-lip aperture per frame (face-mesh landmarks,
`measure_mouth(...).aperture`) against each driver's `MouthTrack.effective_aperture()` from the
clip's own audio, and against a loudness-only baseline (per-frame RMS). Pearson r is taken over
the frames with speech (`speech_mask`, dilated by 2 frames), at lag 0 and at the best lag within
+-200 ms. Landmarks are cached per clip in a temporary folder so reruns are fast.

With a preset, each driver runs as a live session runs it (`StreamingDriver` with the preset's
context and look-ahead, fed 20 ms chunks, progressive), so the figures are what that preset costs
in accuracy. Every run also counts the frames whose mouth is open (effective aperture above
OPEN_APERTURE) in silences of at least LONG_SILENCE_MS by the whole clip's VAD, beyond the
CLOSE_RAMP_MS the mouth is meant to take to close (and to open before speech). The talking-face
clips hold few long silences, so that count also runs, without a face to compare with, on the
folder's *.wav files and on a synthetic clip: the bundled speech with pauses of PAUSES_S put between
its phrases, over a noise floor at NOISE_FLOOR_DBFS (`pauses_clip`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from scipy.ndimage import binary_dilation

from lipstream.audio import SAMPLE_RATE, FrameClock, load_audio
from lipstream.audio.features import frame_features
from lipstream.audio.vad import speech_mask
from lipstream.bench.machine import machine_info
from lipstream.errors import NotSupportedError
from lipstream.face import measure_mouth, track_faces
from lipstream.face.landmarks import LANDMARK_MODEL
from lipstream.motion.drivers import DEFAULT_DRIVER, DRIVER_NAMES, get_driver
from lipstream.motion.params import MouthTrack
from lipstream.motion.smoothing import CLOSE_RAMP_MS
from lipstream.motion.streaming import StreamingDriver
from lipstream.session.presets import Preset

BASELINE_NAME = "loudness"
MAX_LAG_MS = 200.0
SPEECH_DILATE_FRAMES = 2
LONG_SILENCE_MS = 300.0
OPEN_APERTURE = 0.05  # effective aperture (0 closed .. 1 wide open) above which a mouth counts as open
LIVE_CHUNK_MS = 20.0
PAUSES_S = (0.4, 0.6, 0.9, 1.2)  # cycled between the phrases of the synthetic pauses clip
PHRASE_GAP_MS = 80.0  # the bundled speech is cut where the VAD hears a gap this long
NOISE_FLOOR_DBFS = -60.0  # a quiet room's floor, so that its silences are not digital zeros
PAUSES_CLIP = "synthetic: bundled speech with pauses"
LAG_CONVENTION = (
    "lag_ms > 0: the prediction is late, i.e. the real mouth moved lag_ms before the predicted "
    "curve; r(lag) = corr(prediction[k + n], measured[k]) with n = lag_ms * fps / 1000 frames"
)


@dataclass
class Clip:
    """One measured clip: 16 kHz float32 audio and the measured aperture (T,) at the bench fps (NaN: no face)."""

    name: str
    audio: np.ndarray
    aperture: np.ndarray


def run_driver_accuracy(
    media_dir: Path,
    fps: float = 25.0,
    drivers: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    preset: Preset | None = None,
) -> dict:
    """Measure every driver (and the loudness baseline) on every *.mp4 in media_dir at fps.

    preset: run the drivers live with its context and look-ahead (None: offline, whole clips);
    then only the preset's own driver unless `drivers` names others.
    Returns a JSON-ready dict: per clip and per predictor r at lag 0, best r and its lag (ms),
    frames open in long silences, the median of each over clips (open frames summed), and the
    machine the run was made on.
    """
    paths = sorted(Path(media_dir).glob("*.mp4"))
    if not paths:
        raise NotSupportedError(
            f"no *.mp4 files in {media_dir}; the driver benchmark needs videos of people talking "
            "(a face and its speech), e.g. the project's eval-media folder"
        )
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "lipstream-bench-landmarks"
    if drivers is None:
        drivers = (preset.driver,) if preset else DRIVER_NAMES
    predictors = [BASELINE_NAME, *drivers]
    clips, seconds = [], {name: 0.0 for name in predictors}
    audio_seconds = 0.0
    for path in paths:
        clip = load_clip(path, fps, cache)
        audio_seconds += len(clip.audio) / SAMPLE_RATE
        mask = binary_dilation(speech_mask(clip.audio, fps), iterations=SPEECH_DILATE_FRAMES)
        row = {"clip": clip.name, "frames": int(len(clip.aperture)), "speech_frames": int(mask.sum())}
        for name in predictors:
            start = time.perf_counter()
            predicted = _predict(name, clip.audio, fps, preset)
            seconds[name] += time.perf_counter() - start
            row[name] = lagged_correlation(predicted, clip.aperture, mask, fps)
            row[name].update(open_in_long_silence(predicted, speech_mask(clip.audio, fps), fps))
        clips.append(row)
    silences = [_silence_row(name, audio, predictors[1:], fps, preset) for name, audio in _silence_clips(media_dir)]
    summary = {
        name: {
            "median_r_lag0": _median(c[name]["r_lag0"] for c in clips),
            "median_best_r": _median(c[name]["best_r"] for c in clips),
            "median_best_lag_ms": _median(c[name]["best_lag_ms"] for c in clips),
            "real_time_factor": round(seconds[name] / audio_seconds, 4),
            "long_silence_frames": sum(c[name]["long_silence_frames"] for c in clips),
            "open_in_long_silence": sum(c[name]["open_in_long_silence"] for c in clips),
        }
        for name in predictors
    }
    for name in predictors[1:]:
        frames = summary[name]["long_silence_frames"] + sum(r[name]["long_silence_frames"] for r in silences)
        opened = summary[name]["open_in_long_silence"] + sum(r[name]["open_in_long_silence"] for r in silences)
        summary[name]["long_silence_all_clips"] = {"frames": frames, "open": opened,
                                                   "open_share": round(opened / frames, 4) if frames else None}
    return {
        "benchmark": "driver-accuracy",
        "media_dir": str(media_dir),
        "fps": fps,
        "mode": (f"live: preset {preset.name}, look-ahead {_lookahead_ms(preset)} ms, context "
                 f"{preset.context_ms:g} ms, {LIVE_CHUNK_MS:g} ms chunks" if preset else "offline: whole clips"),
        "long_silence": (f"frames with effective aperture > {OPEN_APERTURE} in silences >= {LONG_SILENCE_MS:g} ms "
                         f"(speech_mask of the whole clip), {CLOSE_RAMP_MS:g} ms closing/opening ramps excluded"),
        "measure": f"inner-lip aperture / outer-eye distance ({LANDMARK_MODEL}), Pearson r",
        "frames_used": f"speech_mask dilated by {SPEECH_DILATE_FRAMES} frames, face found",
        "max_lag_ms": MAX_LAG_MS,
        "lag_convention": LAG_CONVENTION,
        "baseline": f"{BASELINE_NAME}: per-frame RMS of the audio",
        "default_driver": DEFAULT_DRIVER,
        "summary": summary,
        "clips": clips,
        "silence_clips": silences,
        "machine": machine_info(),
    }


def pauses_clip() -> np.ndarray:
    """The bundled speech (float32 16 kHz) with a pause from PAUSES_S (cycled) put in each gap of
    PHRASE_GAP_MS or more between its phrases, over white noise at NOISE_FLOOR_DBFS (fixed seed)."""
    from lipstream.audio.vad import speech_segments
    from lipstream.avatar.resolve import bundled_asset

    speech = load_audio(bundled_asset("speech.wav"))
    parts = []
    for i, (start, end) in enumerate(speech_segments(speech, min_silence_ms=PHRASE_GAP_MS)):
        parts += [speech[start:end], np.zeros(int(PAUSES_S[i % len(PAUSES_S)] * SAMPLE_RATE), np.float32)]
    audio = np.concatenate(parts)
    noise = np.random.default_rng(0).standard_normal(len(audio)) * 10 ** (NOISE_FLOOR_DBFS / 20)
    return (audio + noise).astype(np.float32)


def _silence_clips(media_dir: Path) -> list[tuple[str, np.ndarray]]:
    """(name, float32 16 kHz audio) of the folder's *.wav files and the synthetic pauses clip."""
    return [(p.stem, load_audio(p)) for p in sorted(Path(media_dir).glob("*.wav"))] + [(PAUSES_CLIP, pauses_clip())]


def _silence_row(name: str, audio: np.ndarray, drivers: Sequence[str], fps: float, preset: Preset | None) -> dict:
    """Frames open in long silences of one audio-only clip, per driver."""
    speech = speech_mask(audio, fps)
    row = {"clip": name, "frames": int(len(speech))}
    for driver in drivers:
        row[driver] = open_in_long_silence(_predict(driver, audio, fps, preset), speech, fps)
    return row


def write_results(result: dict, path: Path) -> None:
    """Write a result dict as indented JSON, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def load_clip(path: Path, fps: float, cache_dir: Path) -> Clip:
    """Audio and measured aperture of a video; landmarks come from cache_dir when present."""
    audio = load_audio(path)
    times, landmarks = _cached_landmarks(Path(path), cache_dir)
    aperture = measure_mouth(landmarks).aperture
    n_frames = FrameClock(fps).frame_count(len(audio))
    return Clip(Path(path).stem, audio, _resample_to_clock(times, aperture, n_frames, fps))


def lagged_correlation(predicted: np.ndarray, measured: np.ndarray, mask: np.ndarray, fps: float) -> dict:
    """Pearson r of predicted vs measured (both (T,)) over masked, finite frames, at each lag.

    Returns {"r_lag0", "best_r", "best_lag_ms"}; see LAG_CONVENTION for the sign of the lag.
    """
    n = min(len(predicted), len(measured), len(mask))
    predicted, measured, mask = predicted[:n], measured[:n], mask[:n]
    max_lag = int(round(MAX_LAG_MS * fps / 1000.0))
    by_lag = {}
    for lag in range(-max_lag, max_lag + 1):
        k = np.arange(max(0, -lag), min(n, n - lag))
        pred, meas = predicted[k + lag], measured[k]
        keep = mask[k] & np.isfinite(meas) & np.isfinite(pred)
        by_lag[lag] = _pearson(pred[keep], meas[keep])
    best = max(by_lag, key=lambda lag: by_lag[lag])
    return {
        "r_lag0": round(by_lag[0], 4),
        "best_r": round(by_lag[best], 4),
        "best_lag_ms": round(best * 1000.0 / fps, 1),
    }


def open_in_long_silence(predicted: np.ndarray, speech: np.ndarray, fps: float) -> dict:
    """Frames (of (T,) effective apertures) in silences >= LONG_SILENCE_MS of the (T,) speech mask,
    ramps of CLOSE_RAMP_MS at both ends left out, and how many of them are open (> OPEN_APERTURE)."""
    n = min(len(predicted), len(speech))
    ramp = int(np.ceil(CLOSE_RAMP_MS * fps / 1000.0))
    change = np.diff(np.concatenate([[False], ~np.asarray(speech[:n], bool), [False]]).astype(np.int8))
    frames = opened = 0
    for start, end in zip(np.flatnonzero(change == 1), np.flatnonzero(change == -1)):  # silent [start, end)
        if (end - start) * 1000.0 / fps < LONG_SILENCE_MS:
            continue
        inner = predicted[start + (ramp if start > 0 else 0) : end - (ramp if end < n else 0)]
        frames += len(inner)
        opened += int((inner > OPEN_APERTURE).sum())
    return {"long_silence_frames": frames, "open_in_long_silence": opened}


def _predict(name: str, audio: np.ndarray, fps: float, preset: Preset | None = None) -> np.ndarray:
    if name == BASELINE_NAME:
        return frame_features(audio, fps).rms
    if preset is None:
        return get_driver(name, fps).drive(audio).effective_aperture()
    return _live_track(get_driver(name, fps), audio, fps, preset).effective_aperture()


def _live_track(driver, audio: np.ndarray, fps: float, preset: Preset) -> MouthTrack:
    """The mouth track a live session with `preset`'s timing makes of float32 16 kHz audio pushed in
    LIVE_CHUNK_MS chunks (progressive, no CPU cap: the same rows on any machine)."""
    streaming = StreamingDriver(driver, fps, block_s=0.0, context_s=preset.context_ms / 1000,
                                guard_s=preset.guard_ms / 1000,
                                lookahead_s=None if preset.lookahead_ms is None else preset.lookahead_ms / 1000)
    chunk = int(LIVE_CHUNK_MS * SAMPLE_RATE / 1000)
    rows = [streaming.push(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    return MouthTrack(np.vstack([*rows, streaming.flush()]), fps)


def _lookahead_ms(preset: Preset) -> float:
    if preset.lookahead_ms is not None:
        return preset.lookahead_ms
    return round(get_driver(preset.driver, 25.0).lookahead_ms + preset.guard_ms, 1)


def _cached_landmarks(path: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frame times (N,) in s and landmarks (N, 478, 2) of a video, computed once per file version
    and landmark model."""
    stat = path.stat()
    cached = cache_dir / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}-{LANDMARK_MODEL}.npz"
    if cached.is_file():
        with np.load(cached) as data:
            return data["times"], data["landmarks"]
    times: list[float] = []
    landmarks = track_faces(_decoded_rgb(path, times))
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npz")
    np.savez(partial, times=np.asarray(times), landmarks=landmarks)
    partial.replace(cached)
    return np.asarray(times), landmarks


def _decoded_rgb(path: Path, times: list[float]) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video's first video stream; appends each frame's time (s) to times."""
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            times.append(float(frame.time))
            yield frame.to_ndarray(format="rgb24")


def _resample_to_clock(times: np.ndarray, values: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Values of video frames shown at `times` (s), sampled at the clock's frame times; NaN past the end."""
    clock_times = np.arange(n_frames) / fps
    shown = np.searchsorted(times, clock_times + 0.5 / fps) - 1
    out = np.full(n_frames, np.nan, np.float32)
    valid = (shown >= 0) & (clock_times <= times[-1] + 1.5 / fps) if len(times) else np.zeros(n_frames, bool)
    out[valid] = values[shown[valid]]
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _median(values) -> float:
    return round(float(np.median(list(values))), 4)
