"""Measuring sync: the whole-clip offset, sliding windows, and the metrics built from them."""

from __future__ import annotations

import os

import numpy as np

from lipstream.audio.vad import speech_mask
from lipstream.errors import BadAudioError
from lipstream.evaluate.metrics import SyncMetrics, SyncWindow, grade, summarise_windows
from lipstream.evaluate.offset import OffsetEstimate, candidate_offsets, peak, score_curves
from lipstream.evaluate.signals import AUDIO_RATE_HZ, audio_signals, lip_signals
from lipstream.evaluate.video import AudioInput, BadVideoError, Clip, read_clip

WINDOW_S = 2.0
HOP_S = 0.5
MIN_WINDOW_FACE_SHARE = 0.5
MIN_WINDOW_SPEECH_SHARE = 0.3
MIN_SPEECH_S = 1.0  # in the whole clip
# Below this, a window's curve has no clear peak and its offset is not used.
MIN_WINDOW_CONFIDENCE = 0.1
# Weight of the whole clip's score curve added to each window's before its peak is taken.
WHOLE_CLIP_PRIOR = 0.5
LOW_CONFIDENCE = 0.1  # whole clip: say the estimate is unreliable


def evaluate_video_sync(video: str | os.PathLike, audio: AudioInput = None) -> SyncMetrics:
    """A/V offset and sync metrics of a talking-face video.

    `audio` is None (the video's own track), a path, or float32 mono 16 kHz samples (n,) that
    start with the first video frame. Raises BadVideoError / BadAudioError with what to do.
    """
    return evaluate_clip(read_clip(video, audio))


def evaluate_clip(clip: Clip) -> SyncMetrics:
    """Sync metrics of a clip already read (see `read_clip`); the audio may be replaced first."""
    duration = clip.info.duration_s
    if duration < WINDOW_S:
        raise BadVideoError(
            f"{clip.info.path} is {duration:.2f} s long; the evaluator needs at least {WINDOW_S:.0f} s of talking"
        )
    speech = speech_mask(clip.audio, AUDIO_RATE_HZ)
    if speech.sum() / AUDIO_RATE_HZ < MIN_SPEECH_S:
        raise BadAudioError(
            f"no speech found in the audio of {clip.info.path} ({clip.audio_source}); lips can only be "
            "timed against speech: check that the right audio track or --audio file is used"
        )
    times = clip.lips.times_s
    lip = lip_signals(clip.lips)
    audio = audio_signals(clip.audio)
    offsets = candidate_offsets()
    windows = _windows(clip, speech)
    measured = [i for i, w in enumerate(windows) if w.skipped is None]
    spans = [(0, len(times))] + [_span(times, windows[i]) for i in measured]
    curves = score_curves(lip, times, audio, offsets, spans)
    whole = peak(offsets, curves[0])
    for i, curve in zip(measured, curves[1:], strict=True):
        _set_window_offset(windows[i], offsets, curve, curves[0])
    summary = summarise_windows(windows, whole.offset_ms)
    return SyncMetrics(
        video=clip.info.path,
        audio=clip.audio_source,
        duration_s=duration,
        fps=clip.info.fps,
        variable_frame_rate=clip.info.variable_frame_rate,
        audio_start_s=clip.audio_start_s,
        offset_ms=whole.offset_ms,
        confidence=whole.confidence,
        peak_score=whole.peak_score,
        average_offset_ms=summary.average_offset_ms,
        max_offset_ms=summary.max_offset_ms,
        sync_accuracy=summary.sync_accuracy,
        temporal_consistency=summary.temporal_consistency,
        offset_spread_ms=summary.offset_spread_ms,
        violation_rate=summary.violation_rate,
        grade=grade(summary.average_offset_ms),
        face_share=float(clip.lips.has_face.mean()),
        speech_share=float(speech.mean()),
        windows=windows,
        curve_offsets_ms=whole.offsets_ms,
        curve_scores=whole.scores,
        trace_times_s=times,
        trace_lips=lip[0],
        trace_audio=_audio_trace(audio[0], times, whole),
        notes=_notes(clip, windows, whole),
    )


def _windows(clip: Clip, speech: np.ndarray) -> list[SyncWindow]:
    """WINDOW_S windows every HOP_S, with face and speech shares; those lacking either skipped."""
    times = clip.lips.times_s
    face = clip.lips.has_face
    n_windows = int(np.floor((clip.info.duration_s - WINDOW_S) / HOP_S + 1e-6)) + 1
    out = []
    for k in range(n_windows):
        start = k * HOP_S
        w = SyncWindow(start_s=start, end_s=start + WINDOW_S)
        i0, i1 = _span(times, w)
        w.face_share = float(face[i0:i1].mean()) if i1 > i0 else 0.0
        s0, s1 = int(round(start * AUDIO_RATE_HZ)), int(round(w.end_s * AUDIO_RATE_HZ))
        w.speech_share = float(speech[s0:s1].mean()) if s1 > s0 else 0.0
        if w.face_share < MIN_WINDOW_FACE_SHARE:
            w.skipped = f"no face in {100 * (1 - w.face_share):.0f}% of the frames"
        elif w.speech_share < MIN_WINDOW_SPEECH_SHARE:
            w.skipped = f"no speech (speech in {100 * w.speech_share:.0f}% of the window)"
        out.append(w)
    return out


def _span(times: np.ndarray, window: SyncWindow) -> tuple[int, int]:
    """Indices [i0, i1) of the frames whose time lies in the window."""
    return int(np.searchsorted(times, window.start_s)), int(np.searchsorted(times, window.end_s))


def _set_window_offset(window: SyncWindow, offsets: np.ndarray, curve: np.ndarray, whole: np.ndarray) -> None:
    """The window's offset: the peak of its own curve plus WHOLE_CLIP_PRIOR x the whole clip's
    (2 s of speech often has several similar peaks; the clip's evidence breaks the tie);
    its confidence is read on its own curve."""
    if not np.isfinite(curve).all():
        window.skipped = "too few frames with a face"
        return
    own = peak(offsets, curve)
    est = peak(offsets, curve + WHOLE_CLIP_PRIOR * whole)
    window.confidence = float(np.interp(est.offset_ms, own.offsets_ms, own.scores) - np.median(own.scores))
    if window.confidence < MIN_WINDOW_CONFIDENCE:
        window.skipped = f"no clear alignment (confidence {window.confidence:.2f} < {MIN_WINDOW_CONFIDENCE})"
        return
    window.offset_ms = est.offset_ms


def _audio_trace(openness: np.ndarray, times: np.ndarray, whole: OffsetEstimate) -> np.ndarray:
    """Audio openness (N,) read at each frame's time minus the found offset (aligned to the lips)."""
    grid = np.arange(len(openness)) / AUDIO_RATE_HZ
    return np.interp(times - whole.offset_ms / 1000.0, grid, openness, period=len(openness) / AUDIO_RATE_HZ)


def _notes(clip: Clip, windows: list[SyncWindow], whole: OffsetEstimate) -> list[str]:
    notes = []
    if abs(clip.audio_start_s) >= 0.001:
        when = "after" if clip.audio_start_s > 0 else "before"
        notes.append(
            f"the audio track starts {abs(clip.audio_start_s) * 1000:.0f} ms {when} the picture "
            "(container timestamps); measured as it plays"
        )
    if clip.info.variable_frame_rate:
        notes.append("variable frame rate: each frame is placed by its own timestamp")
    skipped = [w for w in windows if w.skipped is not None]
    if skipped:
        notes.append(f"{len(skipped)} of {len(windows)} windows skipped (see the window table)")
    if whole.confidence < LOW_CONFIDENCE:
        notes.append(
            f"low confidence ({whole.confidence:.2f}): lips and audio agree weakly at every offset, "
            "so the offset may be wrong"
        )
    return notes
