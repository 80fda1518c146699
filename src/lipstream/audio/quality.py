"""What incoming audio sounds like to the engine: level, clipping, noise, and a rate that lies.

Seed 002's audio quality assessment, kept running over a live stream: each chunk (n, channels)
int16 or float32 at its own rate adds to the figures, in BLOCK_S blocks of the channel mix.

- level: RMS of the loudest blocks (those above the median: speech, not the pauses), dBFS;
- clipping: share of samples within CLIP_LEVEL of full scale;
- SNR estimate: loud blocks' energy (95th percentile) over the noise floor (10th), dB: a
  block-energy estimate that needs pauses in the speech to see the floor;
- rate mismatch: audio declared at a rate above what it was recorded at (8 or 16 kHz audio
  resampled up, or the wrong rate stated). A resampler leaves a cliff at the original Nyquist
  frequency, which real recordings never have: for each common rate below the declared one,
  the power above its half (25-50 % above, past a resampler's transition band) against below
  it (5-20 % under); a drop of CLIFF_DB or more names that rate as the likely one.
"""

from __future__ import annotations

from collections import deque

import numpy as np

BLOCK_S = 0.02
WINDOW_BLOCKS = 1500  # the figures are over the last 30 s of audio
CLIP_LEVEL = 0.999  # of full scale
COMMON_RATES_HZ = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100)
CLIFF_DB = 40.0
_EPS = 1e-12


class AudioQuality:
    """Running level, clipping, SNR and bandwidth of one stream; `snapshot()` reports them."""

    def __init__(self):
        self._energies: deque[float] = deque(maxlen=WINDOW_BLOCKS)  # mean square per block
        self._spectrum: np.ndarray | None = None  # power per rfft bin of a block, summed
        self._rate = 0
        self._samples = 0
        self._clipped = 0

    def add(self, samples: np.ndarray, sample_rate: int) -> None:
        """One chunk (n, channels) int16 or float32 [-1, 1] at sample_rate Hz."""
        x = np.asarray(samples)
        scale = 32768.0 if x.dtype == np.int16 else 1.0
        x = x.astype(np.float64) / scale
        if x.ndim == 2:
            self._clipped += int((np.abs(x) >= CLIP_LEVEL).any(axis=1).sum())
            x = x.mean(axis=1)
        else:
            self._clipped += int((np.abs(x) >= CLIP_LEVEL).sum())
        self._samples += len(x)
        if sample_rate != self._rate:
            self._rate, self._spectrum = sample_rate, None
        block = max(1, int(BLOCK_S * sample_rate))
        blocks = x[: len(x) // block * block].reshape(-1, block)
        if not len(blocks):
            return
        self._energies.extend(np.mean(blocks**2, axis=1))
        power = np.sum(np.abs(np.fft.rfft(blocks * np.hanning(block), axis=1)) ** 2, axis=0)
        self._spectrum = power if self._spectrum is None else self._spectrum + power

    def snapshot(self) -> dict:
        """levelDbfs, snrDb, clippedShare, sampleRate, likelyRateHz (the rate the audio was made at,
        if lower than sampleRate; else None) and rateMismatch; all None before any audio."""
        if not self._energies:
            return {"levelDbfs": None, "snrDb": None, "clippedShare": None, "sampleRate": None,
                    "likelyRateHz": None, "rateMismatch": None}
        energies = np.asarray(self._energies)
        loud = energies[energies >= np.median(energies)]
        floor, peak = np.percentile(energies, [10, 95])
        likely = self._likely_rate()
        return {
            "levelDbfs": round(float(10 * np.log10(np.mean(loud) + _EPS)), 1),
            "snrDb": round(float(10 * np.log10((peak + _EPS) / (floor + _EPS))), 1),
            "clippedShare": round(self._clipped / self._samples, 4),
            "sampleRate": self._rate,
            "likelyRateHz": likely,
            "rateMismatch": likely is not None,
        }

    def _likely_rate(self) -> int | None:
        """The lowest common rate below the declared one with a resampler's cliff at its half."""
        if self._spectrum is None:
            return None
        hz_per_bin = self._rate / 2 / (len(self._spectrum) - 1)

        def band_db(low_hz: float, high_hz: float) -> float | None:
            band = self._spectrum[int(np.ceil(low_hz / hz_per_bin)) : int(high_hz / hz_per_bin) + 1]
            return 10 * np.log10(np.mean(band) + _EPS) if len(band) else None

        for rate in COMMON_RATES_HZ:
            edge = rate / 2
            if edge * 1.3 >= self._rate / 2:
                break
            below, above = band_db(0.8 * edge, 0.95 * edge), band_db(1.25 * edge, min(1.5 * edge, self._rate / 2))
            if below is not None and above is not None and below - above >= CLIFF_DB:
                return rate
        return None
