"""Voice activity: speech probability per 32 ms chunk, and a speech mask per video frame.

The probability comes from silero-vad 6.2.3's ONNX model (MIT, shipped in lipstream's
assets/models, see NOTICE) run on onnxruntime alone: the silero-vad package itself pulls torch. The mask
smooths the raw decisions the way silero's `get_speech_timestamps` does: hysteresis, short
gaps bridged, short blips dropped, a little padding.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.audio.features import frame_bounds

CHUNK_SAMPLES = 512  # 32 ms at 16 kHz: silero's window
_CONTEXT_SAMPLES = 64  # silero's 16 kHz model sees the last 64 samples of the previous chunk

SPEECH_THRESHOLD = 0.5
HYSTERESIS = 0.15  # speech ends when the probability falls below threshold - HYSTERESIS
MIN_SILENCE_MS = 200.0  # shorter gaps stay speech
MIN_SPEECH_MS = 100.0  # shorter blips are dropped
PAD_MS = 30.0  # added before and after each speech segment
# Future audio a frame's speech_mask value depends on: whether a gap is short enough to bridge
# is known MIN_SILENCE_MS after it starts, once the chunk that resumes speech has arrived.
MASK_LOOKAHEAD_MS = MIN_SILENCE_MS + CHUNK_SAMPLES * 1000 / SAMPLE_RATE


def speech_probability(audio: np.ndarray) -> np.ndarray:
    """Speech probability (n_chunks,) float32 in [0, 1] for float32 mono 16 kHz audio.

    Chunk i covers samples [512 i, 512 (i + 1)) (32 ms); n_chunks = ceil(n / 512), the last
    chunk zero-padded.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    n_chunks = -(-len(audio) // CHUNK_SAMPLES)
    chunks = np.zeros(n_chunks * CHUNK_SAMPLES, np.float32)
    chunks[: len(audio)] = audio
    chunks = chunks.reshape(n_chunks, CHUNK_SAMPLES)
    return _silero_probability(chunks)


def speech_segments(
    audio: np.ndarray,
    threshold: float = SPEECH_THRESHOLD,
    min_silence_ms: float = MIN_SILENCE_MS,
    min_speech_ms: float = MIN_SPEECH_MS,
    pad_ms: float = PAD_MS,
) -> list[tuple[int, int]]:
    """Speech segments [(start, end), ...] in samples of float32 mono 16 kHz audio, sorted, disjoint."""
    audio = np.asarray(audio, np.float32).reshape(-1)
    return _segments(speech_probability(audio), 0, len(audio), threshold, min_silence_ms, min_speech_ms, pad_ms)


def speech_mask(
    audio: np.ndarray,
    fps: float,
    threshold: float = SPEECH_THRESHOLD,
    min_silence_ms: float = MIN_SILENCE_MS,
    min_speech_ms: float = MIN_SPEECH_MS,
    pad_ms: float = PAD_MS,
) -> np.ndarray:
    """Per video frame (T,) bool: True where the frame's middle lies in a speech segment.

    T = FrameClock(fps).frame_count(n) for float32 mono 16 kHz audio of n samples.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    segments = speech_segments(audio, threshold, min_silence_ms, min_speech_ms, pad_ms)
    return _frames_in_segments(segments, 0, len(audio), fps)


class StreamingVad:
    """`speech_mask` for windows of a growing stream, running silero once per 32 ms chunk.

    silero is recurrent and causal: its state is carried from chunk to chunk, so each sample is
    analysed once (re-running it over every window of a live driver was most of its cost). Chunk i
    covers stream samples [512 i, 512 (i + 1)); the last, incomplete chunk is scored zero-padded
    (as `speech_probability` does at a clip's end) without moving the state, and again once whole.
    The hysteresis, gap bridging and padding of `speech_mask` run over the kept probabilities,
    from `forget_before`'s sample on.
    """

    def __init__(self):
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, _CONTEXT_SAMPLES), np.float32)
        self._partial = np.zeros(0, np.float32)  # samples after the last whole chunk
        self._prob: list[float] = []  # one per whole chunk, from chunk _first on
        self._first = 0
        self.received = 0  # stream samples pushed

    def push(self, samples: np.ndarray) -> None:
        """Append float32 mono 16 kHz samples; scores every chunk they complete."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.received += len(samples)
        samples = np.concatenate([self._partial, samples])
        whole = len(samples) // CHUNK_SAMPLES * CHUNK_SAMPLES
        for i in range(0, whole, CHUNK_SAMPLES):
            prob, self._state, self._context = _silero_step(samples[i : i + CHUNK_SAMPLES], self._state, self._context)
            self._prob.append(prob)
        self._partial = samples[whole:]

    def mask(self, start: int, n_samples: int, fps: float) -> np.ndarray:
        """Per video frame (T,) bool of the window [start, start + n_samples) of the stream, as
        `speech_mask` of the whole stream pushed so far gives them (from the kept history on)."""
        prob = list(self._prob)
        if len(self._partial):
            padded = np.zeros(CHUNK_SAMPLES, np.float32)
            padded[: len(self._partial)] = self._partial
            prob.append(_silero_step(padded, self._state, self._context)[0])
        first_sample = self._first * CHUNK_SAMPLES
        segments = _segments(np.asarray(prob, np.float32), first_sample, self.received, SPEECH_THRESHOLD,
                             MIN_SILENCE_MS, MIN_SPEECH_MS, PAD_MS)
        return _frames_in_segments(segments, start, n_samples, fps)

    def forget_before(self, sample: int) -> None:
        """Drop the probabilities of chunks that end before stream sample `sample`."""
        drop = min(sample // CHUNK_SAMPLES - self._first, len(self._prob))
        if drop > 0:
            del self._prob[:drop]
            self._first += drop


def _segments(prob: np.ndarray, first_sample: int, end_sample: int, threshold: float, min_silence_ms: float,
              min_speech_ms: float, pad_ms: float) -> list[tuple[int, int]]:
    """Speech segments (samples) from per-chunk probabilities of chunks starting at `first_sample`,
    for audio ending at `end_sample`."""
    ms = SAMPLE_RATE / 1000.0
    runs = [(first_sample + s, first_sample + e) for s, e in _hysteresis_runs(prob, threshold)]
    segments = _bridge_gaps(runs, min_silence_ms * ms)
    segments = [(s, e) for s, e in segments if e - s >= min_speech_ms * ms]
    pad = int(pad_ms * ms)
    padded = [(max(first_sample, s - pad), min(end_sample, e + pad)) for s, e in segments]
    return _bridge_gaps(padded, 0)


def _frames_in_segments(segments: list[tuple[int, int]], start: int, n_samples: int, fps: float) -> np.ndarray:
    """(T,) bool for the frames of [start, start + n_samples): whether each frame's middle is in a segment."""
    bounds = frame_bounds(n_samples, fps)
    middles = start + (bounds[:-1] + bounds[1:]) / 2.0
    mask = np.zeros(len(middles), bool)
    for seg_start, seg_end in segments:
        mask |= (middles >= seg_start) & (middles < seg_end)
    return mask


def _hysteresis_runs(prob: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Sample ranges where speech starts at prob >= threshold and ends below threshold - HYSTERESIS."""
    runs, start = [], None
    for i, p in enumerate(prob):
        if start is None and p >= threshold:
            start = i
        elif start is not None and p < threshold - HYSTERESIS:
            runs.append((start * CHUNK_SAMPLES, i * CHUNK_SAMPLES))
            start = None
    if start is not None:
        runs.append((start * CHUNK_SAMPLES, len(prob) * CHUNK_SAMPLES))
    return runs


def _bridge_gaps(segments: list[tuple[int, int]], min_gap: float) -> list[tuple[int, int]]:
    """Merge sorted segments whose gap is shorter than min_gap samples (or overlapping)."""
    merged: list[tuple[int, int]] = []
    for start, end in segments:
        if merged and start - merged[-1][1] < max(min_gap, 1e-9):
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


@lru_cache(maxsize=1)
def _silero_session():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(files("lipstream") / "assets" / "models" / "silero_vad.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _silero_probability(chunks: np.ndarray) -> np.ndarray:
    """Run silero chunk by chunk (it is recurrent), carrying its state and 64-sample context."""
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, _CONTEXT_SAMPLES), np.float32)
    out = np.zeros(len(chunks), np.float32)
    for i, chunk in enumerate(chunks):
        out[i], state, context = _silero_step(chunk, state, context)
    return out


def _silero_step(chunk: np.ndarray, state: np.ndarray, context: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Speech probability of one 512-sample chunk, and silero's next state and context."""
    x = np.concatenate([context, chunk[None]], axis=1)
    prob, state = _silero_session().run(None, {"input": x, "state": state, "sr": _RATE})
    return float(prob[0, 0]), state, x[:, -_CONTEXT_SAMPLES:]


_RATE = np.array(SAMPLE_RATE, np.int64)
