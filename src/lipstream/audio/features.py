"""Audio features on the one clock: loudness, log-mel, MFCC and pitch, one row per video frame.

Spectral features are computed on a 10 ms hop with a 25 ms Hann window (`log_mel_spectrogram`,
frame i centred on sample i * hop) and pooled into video frames: frame k of a `FrameClock`
covers samples [k*sr/fps, (k+1)*sr/fps) and takes the mean power of the spectral frames centred
inside it. Loudness is exact over each video frame's own samples. numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.fft import dct, irfft, rfft
from scipy.signal import firwin, resample_poly

from lipstream.audio.clock import SAMPLE_RATE, FrameClock

N_MELS = 40
N_MFCC = 13
SPEC_HOP_S = 0.010
SPEC_WINDOW_S = 0.025
N_FFT = 512
MEL_FMIN_HZ = 60.0
MEL_FMAX_HZ = 7600.0
LOG_ENERGY_FLOOR_DB = -100.0
LOG_MEL_FLOOR = 1e-10
PITCH_MIN_HZ = 60.0
PITCH_MAX_HZ = 400.0
PITCH_WINDOW_S = 0.040
# Peak of the normalised autocorrelation a frame needs to count as voiced, and its loudness.
VOICING_THRESHOLD = 0.5
VOICING_MIN_DB = -55.0
# How far beyond a video frame's span its features read: the spectral frames centred in it reach
# half a 25 ms window out, the pitch frames half a 40 ms window plus the 8 kHz decimation filter
# (21 taps). A frame this far from both ends of a clip has the same features in any clip holding it.
FEATURE_REACH_SAMPLES = int(PITCH_WINDOW_S * SAMPLE_RATE) // 2 + 32


@dataclass
class FrameFeatures:
    """Features of a clip, one row per video frame (T rows; frame k as in `FrameClock`).

    rms: (T,) float32 RMS of the frame's samples (full scale = 1).
    log_energy: (T,) float32 mean power in dB re full scale, floored at -100.
    mel: (T, 40) float32 natural log of mel-band power (60-7600 Hz), floored at log(1e-10).
    mfcc: (T, 13) float32 orthonormal DCT-II of `mel`.
    pitch_hz: (T,) float32 fundamental frequency in Hz, 0 where unvoiced.
    """

    fps: float
    rms: np.ndarray
    log_energy: np.ndarray
    mel: np.ndarray
    mfcc: np.ndarray
    pitch_hz: np.ndarray

    def __len__(self) -> int:
        return len(self.rms)

    def rows(self, start: int, stop: int) -> FrameFeatures:
        """Frames [start, stop) of these features."""
        return FrameFeatures(self.fps, *(getattr(self, name)[start:stop] for name in _ROW_FIELDS))

    @staticmethod
    def concatenate(parts: list[FrameFeatures]) -> FrameFeatures:
        """Features of consecutive frames, in order (at least one part)."""
        return FrameFeatures(parts[0].fps, *(np.concatenate([getattr(p, name) for p in parts]) for name in _ROW_FIELDS))


_ROW_FIELDS = ("rms", "log_energy", "mel", "mfcc", "pitch_hz")


def frame_features(audio: np.ndarray, fps: float) -> FrameFeatures:
    """Per-video-frame features of float32 mono audio in [-1, 1] at 16 kHz, shape (n,).

    T = FrameClock(fps).frame_count(n); the last frame may be only partly covered by audio.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    bounds = frame_bounds(len(audio), fps)
    power = _mean_over_spans(audio.astype(np.float64) ** 2, bounds)
    log_energy = np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), LOG_ENERGY_FLOOR_DB)

    hop = int(round(SPEC_HOP_S * SAMPLE_RATE))
    spec_bounds = _spec_index_bounds(bounds, hop, n_spec=_n_spec_frames(len(audio), hop))
    mel_power = _mel_power(audio, hop)
    mel = np.log(np.maximum(_mean_over_index_spans(mel_power, spec_bounds), LOG_MEL_FLOOR))
    mfcc = mfcc_from_log_mel(mel)
    pitch = _pool_pitch(pitch_track(audio, hop), spec_bounds)
    return FrameFeatures(
        fps=float(fps),
        rms=np.sqrt(power).astype(np.float32),
        log_energy=log_energy.astype(np.float32),
        mel=mel.astype(np.float32),
        mfcc=mfcc,
        pitch_hz=pitch,
    )


class FeatureStream:
    """`frame_features` of windows of a growing stream, each frame computed once.

    Windows start on a frame boundary of the stream (frame k covers stream samples
    [k*16000/fps, (k+1)*16000/fps)) and move forward. A frame whose audio reaches
    FEATURE_REACH_SAMPLES into the stream on both sides is kept, so a later window recomputes only
    its new frames (and a margin before them). At 25 fps (a frame is 4 hops) the result equals
    `frame_features` of the whole stream, frame for frame; at rates whose frames do not start on
    the 10 ms hop grid, the spectral frames pooled into a frame may sit a few samples apart.
    """

    def __init__(self, fps: float):
        self.clock = FrameClock(fps)
        self._first = 0  # stream frame of _kept's first row
        self._kept: FrameFeatures | None = None

    def window(self, audio: np.ndarray, first_frame: int) -> FrameFeatures:
        """Features (T rows) of float32 mono 16 kHz `audio` starting at the stream's frame
        `first_frame` and ending at the newest sample pushed; T = frame_count(len(audio))."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        clock, start = self.clock, self.clock.frame_start(first_frame)
        end_frame = first_frame + clock.frame_count(len(audio))
        kept = self._kept_from(first_frame, end_frame)
        new_first = first_frame + (len(kept) if kept is not None else 0)
        margin = -(-FEATURE_REACH_SAMPLES * clock.fps // clock.sample_rate)  # frames
        compute_first = max(first_frame, new_first - int(margin))
        compute_start = clock.frame_start(compute_first)
        fresh = frame_features(audio[compute_start - start :], clock.fps).rows(new_first - compute_first, None)
        rows = FrameFeatures.concatenate([kept, fresh]) if kept is not None else fresh
        # keep the frames whose reach lies inside the audio read for them (or starts at the stream's start)
        left_ok = compute_first if compute_start == 0 else clock.frame_count(compute_start + FEATURE_REACH_SAMPLES)
        keep_from = first_frame if kept is not None and left_ok <= new_first else max(left_ok, new_first)
        stable = keep_from
        while stable < end_frame and clock.frame_start(stable + 1) + FEATURE_REACH_SAMPLES <= start + len(audio):
            stable += 1
        self._kept = rows.rows(keep_from - first_frame, stable - first_frame) if stable > keep_from else None
        self._first = keep_from
        return rows

    def _kept_from(self, first_frame: int, end_frame: int) -> FrameFeatures | None:
        """The kept rows from `first_frame` on (None if they do not start there or earlier)."""
        if self._kept is None or self._first > first_frame or self._first + len(self._kept) <= first_frame:
            return None
        return self._kept.rows(first_frame - self._first, end_frame - self._first)


def log_mel_spectrogram(audio: np.ndarray, hop_s: float = SPEC_HOP_S) -> np.ndarray:
    """Log-mel spectrogram (N, 40) float32 of 16 kHz float32 mono audio.

    Row i is centred on sample round(i * hop_s * 16000), 25 ms Hann window; N = ceil(n / hop).
    Values are the natural log of mel-band power, floored at log(1e-10).
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    hop = int(round(hop_s * SAMPLE_RATE))
    return np.log(np.maximum(_mel_power(audio, hop), LOG_MEL_FLOOR)).astype(np.float32)


def mfcc_from_log_mel(log_mel: np.ndarray, n_mfcc: int = N_MFCC) -> np.ndarray:
    """MFCCs (..., n_mfcc) float32: orthonormal DCT-II over the last axis of a log-mel array."""
    return dct(np.asarray(log_mel, np.float64), type=2, norm="ortho", axis=-1)[..., :n_mfcc].astype(np.float32)


def pitch_track(audio: np.ndarray, hop: int = 160) -> np.ndarray:
    """F0 in Hz (N,) float32 every `hop` samples (frame i centred on i * hop), 0 where unvoiced.

    Normalised autocorrelation over a 40 ms window of the audio decimated to 8 kHz; the first
    strong peak between 60 and 400 Hz wins (guards against octave-low errors), refined by
    parabolic interpolation. `hop` must be even.
    """
    audio = resample_poly(np.asarray(audio, np.float32).reshape(-1), 1, 2, window=_decimation_filter())
    rate = SAMPLE_RATE // 2
    win = int(round(PITCH_WINDOW_S * rate))
    frames = _frames(audio, win, hop // 2)
    if len(frames) == 0:
        return np.zeros(0, np.float32)
    frames = frames - frames.mean(axis=1, keepdims=True)
    n_fft = 1 << int(np.ceil(np.log2(2 * win)))
    spectrum = rfft(frames, n_fft, axis=1)
    acf = irfft(spectrum.real**2 + spectrum.imag**2, n_fft, axis=1)[:, :win].astype(np.float64)
    energy = acf[:, :1]
    acf = acf / np.maximum(energy, 1e-12) * (win / (win - np.arange(win)))  # unbiased, r(0) = 1

    lo = int(rate / PITCH_MAX_HZ)
    hi = min(int(rate / PITCH_MIN_HZ), win // 2)
    seg = acf[:, lo - 1 : hi + 2]
    inner = seg[:, 1:-1]
    is_peak = (inner >= seg[:, :-2]) & (inner > seg[:, 2:])
    best = np.where(is_peak, inner, -np.inf).max(axis=1)
    first_strong = np.argmax(is_peak & (inner >= 0.85 * best[:, None]), axis=1)
    rows = np.arange(len(seg))
    y0, y1, y2 = seg[rows, first_strong], seg[rows, first_strong + 1], seg[rows, first_strong + 2]
    denom = y0 - 2 * y1 + y2
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (y0 - y2) / np.where(denom == 0, 1, denom), 0.0)
    lag = lo + first_strong + np.clip(shift, -0.5, 0.5)

    level_db = 10.0 * np.log10(np.maximum(energy[:, 0] / win, 1e-30))
    voiced = (y1 >= VOICING_THRESHOLD) & (level_db > VOICING_MIN_DB) & np.isfinite(best)
    return np.where(voiced, rate / lag, 0.0).astype(np.float32)


def pool_to_frames(rows: np.ndarray, n_samples: int, fps: float, hop: int) -> np.ndarray:
    """Mean of rows (N, D) on a hop grid (row i at sample i * hop) over each video frame: (T, D).

    Video frame k takes the rows whose sample lies in [k*sr/fps, (k+1)*sr/fps), or the row
    nearest its middle when a frame is shorter than a hop. T = FrameClock(fps).frame_count(n_samples).
    """
    bounds = frame_bounds(n_samples, fps)
    rows = np.asarray(rows)
    return _mean_over_index_spans(rows, _spec_index_bounds(bounds, hop, n_spec=len(rows)))


def mel_centre_frequencies() -> np.ndarray:
    """Centre frequency in Hz (40,) of each log-mel band, low to high."""
    return _mel_edges_hz()[1:-1].copy()


def band_power(log_mel: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """Power (T,) float32 summed over the mel bands of log_mel (T, 40) centred in [lo_hz, hi_hz)."""
    centres = mel_centre_frequencies()
    bands = (centres >= lo_hz) & (centres < hi_hz)
    return np.exp(np.asarray(log_mel, np.float64)[:, bands]).sum(axis=1).astype(np.float32)


def frame_bounds(n_samples: int, fps: float) -> np.ndarray:
    """Sample bounds (T + 1,) int64 of the video frames covering n_samples: frame k is [b[k], b[k+1])."""
    clock = FrameClock(fps)
    n_frames = clock.frame_count(n_samples)
    return np.round(np.arange(n_frames + 1) * clock.sample_rate / clock.fps).astype(np.int64)


def _mean_over_spans(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Mean of values (n,) within each span [bounds[k], bounds[k+1]) clipped to n; 0 if empty."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    lo = np.minimum(bounds[:-1], len(values))
    hi = np.minimum(bounds[1:], len(values))
    return (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)


def _n_spec_frames(n_samples: int, hop: int) -> int:
    return -(-n_samples // hop)


def _spec_index_bounds(bounds: np.ndarray, hop: int, n_spec: int) -> np.ndarray:
    """For each video frame, the range [lo, hi) of spectral frames whose centres fall inside it.

    A video frame shorter than a hop (fps > 100) takes the spectral frame nearest its middle.
    Returns (T, 2) int64.
    """
    lo = -(-bounds[:-1] // hop)
    hi = -(-bounds[1:] // hop)
    nearest = np.round((bounds[:-1] + bounds[1:]) / 2 / hop).astype(np.int64)
    empty = hi <= lo
    lo = np.where(empty, nearest, lo)
    hi = np.where(empty, nearest + 1, hi)
    last = max(n_spec - 1, 0)
    lo = np.clip(lo, 0, last)
    hi = np.clip(hi, lo + 1, last + 1)
    return np.stack([lo, hi], axis=1)


def _mean_over_index_spans(rows: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Mean of rows (N, D) over each index span (T, 2); zeros when there are no rows."""
    if len(rows) == 0:
        return np.zeros((len(spans), rows.shape[1]))
    csum = np.concatenate([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
    return (csum[spans[:, 1]] - csum[spans[:, 0]]) / (spans[:, 1] - spans[:, 0])[:, None]


def _pool_pitch(pitch: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Video-frame pitch: median of voiced spectral frames if at least half are voiced, else 0."""
    out = np.zeros(len(spans), np.float32)
    if len(pitch) == 0:
        return out
    for k, (lo, hi) in enumerate(spans):
        chunk = pitch[lo:hi]
        voiced = chunk[chunk > 0]
        if 2 * len(voiced) >= len(chunk) and len(voiced):
            out[k] = np.median(voiced)
    return out


def _frames(audio: np.ndarray, win: int, hop: int) -> np.ndarray:
    """Centred frames (ceil(n / hop), win) float32: frame i spans [i*hop - win//2, i*hop - win//2 + win)."""
    n_frames = _n_spec_frames(len(audio), hop)
    if n_frames == 0:
        return np.zeros((0, win), np.float32)
    padded = np.pad(audio.astype(np.float32), (win // 2, win))
    starts = np.arange(n_frames) * hop
    return padded[starts[:, None] + np.arange(win)[None, :]]


def _mel_power(audio: np.ndarray, hop: int) -> np.ndarray:
    """Mel-band power (N, 40) float64 from a 25 ms Hann-windowed STFT on `hop`-sample steps."""
    win = int(round(SPEC_WINDOW_S * SAMPLE_RATE))
    frames = _frames(audio, win, hop) * np.hanning(win).astype(np.float32)
    spectrum = rfft(frames, N_FFT, axis=1)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float64) @ _mel_filterbank().T


@lru_cache(maxsize=1)
def _decimation_filter() -> np.ndarray:
    """The 41-tap low-pass `resample_poly(x, 1, 2)` designs for float32 audio on every call (its
    default Kaiser window, beta 5), designed once: a live driver decimates a few frames per run."""
    return firwin(41, 0.5, window=("kaiser", 5.0)).astype(np.float32)


@lru_cache(maxsize=1)
def _mel_edges_hz() -> np.ndarray:
    """Band edges (42,) in Hz: equally spaced on the HTK mel scale from MEL_FMIN_HZ to MEL_FMAX_HZ."""
    lo_mel, hi_mel = 2595.0 * np.log10(1.0 + np.array([MEL_FMIN_HZ, MEL_FMAX_HZ]) / 700.0)
    mels = np.linspace(lo_mel, hi_mel, N_MELS + 2)
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def _mel_filterbank() -> np.ndarray:
    """(40, N_FFT // 2 + 1) triangular filters on the HTK mel scale, each summing to 1."""
    edges = _mel_edges_hz()
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return bank / np.maximum(bank.sum(axis=1, keepdims=True), 1e-12)
