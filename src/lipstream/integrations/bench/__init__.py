"""Measuring the voice-agent plugins: the scenarios of issue 12's bars, run by the tests
(tests/integrations, which assert the bars) and by `python -m lipstream.integrations.bench`
(which writes the figures with the machine to bench/results/integrations.json).

This package holds what every scenario shares: speech as a TTS gives it, and a plugin's output
reassembled into an mp4 from when each video frame and each piece of audio would reach a viewer,
to measure with lipstream eval. `livekit_runs` and `pipecat_runs` import their framework.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from lipstream.audio.io import load_audio, resample
from lipstream.avatar.resolve import bundled_asset
from lipstream.evaluate import evaluate_video_sync

TTS_RATE_HZ = 24000
TTS_CHUNK_S = 0.02


def tts_speech(seconds: float, rate: int = TTS_RATE_HZ) -> np.ndarray:
    """The first `seconds` of the bundled speech as a TTS would give it: int16 mono at `rate`."""
    speech = resample(load_audio(bundled_asset("speech.wav")), 16000, rate)[: round(seconds * rate)]
    return np.round(np.clip(speech, -1, 1) * 32767).astype(np.int16)


def chunks(samples: np.ndarray, rate: int = TTS_RATE_HZ, seconds: float = TTS_CHUNK_S) -> list[np.ndarray]:
    """`samples` cut into TTS-sized chunks (20 ms)."""
    step = round(seconds * rate)
    return [samples[i : i + step] for i in range(0, len(samples), step)]


def write_timed_mp4(path: Path, video: list[tuple[float, np.ndarray]], audio: list[tuple[float, np.ndarray]],
                    rate: int, fps: float) -> Path:
    """An mp4 of what a viewer sees and hears: `video` (time s, RGB image) shown from its time until the
    next one; `audio` (time s, int16 (n,) samples at `rate`) playing from its time. Time 0 of the
    file is the first video frame. The file's frame k (shown from k/fps to (k+1)/fps) is the image
    on screen halfway through that span: sampled at its start, an image sent a moment after its
    tick (a frame sent at k/fps + 1 ms) would be shown a whole frame late."""
    start = video[0][0]
    end = max(video[-1][0], max((t + len(a) / rate for t, a in audio), default=start))
    track = np.zeros(round((end - start) * rate) + rate, np.int16)
    for t, samples in audio:
        at = max(0, round((t - start) * rate))
        track[at : at + len(samples)] = samples[: len(track) - at]
    times = np.array([t for t, _ in video])
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=round(fps))
        vs.height, vs.width = video[0][1].shape[:2]
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "mono"
        for k in range(int((end - start) * fps)):
            shown = video[max(0, np.searchsorted(times, start + (k + 0.5) / fps, side="right") - 1)][1]
            out.mux(vs.encode(av.VideoFrame.from_ndarray(shown, format="rgb24")))
        out.mux(vs.encode(None))
        frame_len = 1024
        for i in range(0, len(track), frame_len):
            piece = track[i : i + frame_len]
            frame = av.AudioFrame.from_ndarray(piece[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            out.mux(aus.encode(frame))
        out.mux(aus.encode(None))
    return path


def sync_offset_ms(path: Path, video: list[tuple[float, np.ndarray]], audio: list[tuple[float, np.ndarray]],
                   rate: int, fps: float) -> float:
    """lipstream eval's A/V offset (ms, + = audio early) of the reassembled output (see write_timed_mp4)."""
    return float(evaluate_video_sync(write_timed_mp4(path, video, audio, rate, fps)).offset_ms)


def small_avatar(folder: Path, size_px: int = 256) -> Path:
    """The bundled portrait at size_px x size_px, prepared into `folder`: cheap enough to stay at
    25 fps in real time on a busy 2-core machine (the scenarios' and tests' avatar)."""
    import cv2

    from lipstream.avatar.prepare import prepare

    photo = Path(folder) / "portrait.png"
    image = cv2.imread(str(bundled_asset("portrait.png")))
    cv2.imwrite(str(photo), cv2.resize(image, (size_px, size_px), interpolation=cv2.INTER_AREA))
    return prepare(photo, Path(folder) / "avatar")
