"""`lipstream bench webrtc`: the demo page in headless Chromium talking to a local `serve` over
WebRTC, its microphone a speech WAV (Chromium's fake capture device). What the page receives
(avatar and voice, one stream) is recorded with MediaRecorder for `seconds` (PCM audio: Chromium's
recorder stamps its Opus packets 56 ms late, see `webrtc_probe`) and measured:
video frames received per second (the page's RTCPeerConnection stats) and `lipstream eval`'s
A/V offset of the recording. Issue 13's bars: >= 24 fps over 10 s of speech, in sync within 60 ms.
The avatar is the bundled portrait prepared at 256 px, the size it is sent at.

Needs Chromium (Debian's /usr/bin/chromium), Playwright's Python package and espeak-ng.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from lipstream.audio.io import load_audio, resample
from lipstream.bench.machine import machine_info
from lipstream.errors import NotSupportedError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
SMALL_AVATAR = "portrait256"  # the bundled portrait prepared at 256 px (drawn at the size it is sent)
FPS_BAR = 24.0
SYNC_BAR_MS = 60.0
WAV_RATE_HZ = 48000
PAUSE_S = 0.3
SENTENCES = (
    "hello, I am the lipstream avatar, and my lips move with every word I say.",
    "the quick brown fox jumps over the lazy dog, while the cat watches from the window.",
    "web r t c carries my face and my voice to your browser, in sync, from one clock.",
    "peter piper picked a peck of pickled peppers, and mary had a little lamb.",
)
INBOUND_JS = """async () => {
  const out = {};
  if (!window.lipstreamPeer) return out;
  for (const s of (await window.lipstreamPeer.getStats()).values())
    if (s.type === "inbound-rtp") out[s.kind] = { framesReceived: s.framesReceived, framesDecoded: s.framesDecoded,
      framesDropped: s.framesDropped, samples: s.totalSamplesReceived, width: s.frameWidth, height: s.frameHeight,
      jitterBufferMs: 1000 * s.jitterBufferDelay / Math.max(1, s.jitterBufferEmittedCount),
      playoutNtpMs: s.estimatedPlayoutTimestamp };
  return out;
}"""


def speech_wav(path: Path, min_seconds: float = 12.0) -> Path:
    """Speech from espeak-ng (sentences with short pauses, repeated to `min_seconds`) as the 16-bit
    mono 48 kHz WAV Chromium's fake microphone plays."""
    if shutil.which("espeak-ng") is None:
        raise NotSupportedError("espeak-ng is needed to make the speech: apt-get install espeak-ng")
    pieces, total = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        while total < min_seconds:
            for text in SENTENCES:
                raw = Path(tmp) / "s.wav"
                subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
                speech = resample(load_audio(raw), 16000, WAV_RATE_HZ)
                pieces += [speech, np.zeros(round(PAUSE_S * WAV_RATE_HZ), np.float32)]
                total += len(speech) / WAV_RATE_HZ + PAUSE_S
    samples = np.round(np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE_HZ)
        out.writeframes(samples.tobytes())
    return path


def record_page(http: str, wav: Path, seconds: float, out: Path, profile: Path, preset: str = "low",
                width: int = 256, warmup_s: float = 2.0, avatar: str = "default") -> dict:
    """Open the demo page at `http` with `wav` as the microphone, talk over WebRTC, record what
    the page receives for `seconds` into `out` (WebM); returns the page's figures."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise NotSupportedError("the WebRTC bench drives Chromium with Playwright: pip install playwright") from None
    if not CHROMIUM.exists():
        raise NotSupportedError("the WebRTC bench needs Debian's chromium: apt-get install chromium")
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                        args=args, viewport={"width": 1000, "height": 700})
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(http + "/")
            page.wait_for_function(f"[...document.querySelectorAll('#avatar option')].some(o => o.value === {avatar!r})")
            page.select_option("#avatar", avatar)
            page.select_option("#transport", "webrtc")
            page.select_option("#preset", preset)
            page.select_option("#size", str(width))
            page.click("#mic")
            page.wait_for_function("window.lipstreamPeer && window.lipstreamPeer.connectionState === 'connected'",
                                   timeout=30_000)
            page.wait_for_function("window.lipstream.drawn >= 10", timeout=30_000)
            time.sleep(warmup_s)
            before, started = page.evaluate(INBOUND_JS), time.monotonic()
            recording = page.evaluate(f"window.lipstream.record({round(seconds * 1000)})")
            after, elapsed = page.evaluate(INBOUND_JS), time.monotonic() - started
            log = page.evaluate("document.getElementById('log').textContent")
            page.dispatch_event("#stop", "click")
        finally:
            browser.close()
    out.write_bytes(base64.b64decode(recording))
    video = {k: after.get("video", {}).get(k, 0) - before.get("video", {}).get(k, 0)
             for k in ("framesReceived", "framesDecoded", "framesDropped")}
    audio_samples = after.get("audio", {}).get("samples", 0) - before.get("audio", {}).get("samples", 0)
    fallbacks = [line for line in log.splitlines() if line.startswith("renderer ")]
    return {"seconds": round(elapsed, 2), "video_frames": video, "renderer_fallbacks": fallbacks,
            "received_fps": round(video["framesReceived"] / elapsed, 2),
            "decoded_fps": round(video["framesDecoded"] / elapsed, 2),
            "audio_seconds_received": round(audio_samples / WAV_RATE_HZ, 2),
            "frame_size": [after.get("video", {}).get("width"), after.get("video", {}).get("height")],
            "jitter_buffer_ms": {kind: round(after.get(kind, {}).get("jitterBufferMs", 0), 1) for kind in ("audio", "video")},
            # the sender (NTP) times the browser plays audio and video at now: equal when it syncs them
            "playout_video_minus_audio_ms": _difference(after, "playoutNtpMs"),
            "page_errors": errors, "log": log.splitlines()[-12:]}


def small_portrait(package: Path, photo: Path, size_px: int = 256) -> Path:
    """The bundled portrait at size_px x size_px, prepared as the avatar package `package`."""
    import cv2

    from lipstream.avatar.prepare import prepare
    from lipstream.avatar.resolve import bundled_asset

    image = cv2.imread(str(bundled_asset("portrait.png")))
    cv2.imwrite(str(photo), cv2.resize(image, (size_px, size_px), interpolation=cv2.INTER_AREA))
    return prepare(photo, package)


def recording_figures(path: Path) -> dict:
    """What the recording holds: its video frame rate and lipstream eval's A/V offset."""
    import av

    from lipstream.evaluate import evaluate_video_sync

    with av.open(str(path)) as container:
        audio_codec = container.streams.audio[0].codec_context.name if container.streams.audio else None
        times = [float(f.pts * f.time_base) for f in container.decode(video=0) if f.pts is not None]
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    metrics = evaluate_video_sync(path)
    return {"recorded_frames": len(times), "recorded_fps": round(fps, 2), "recorded_audio_codec": audio_codec,
            "offset_ms": round(float(metrics.offset_ms), 1), "eval": _plain(metrics)}


def run_webrtc_bench(out: Path, seconds: float = 10.0, preset: str = "low", width: int = 256,
                     keep: Path | None = None) -> dict:
    """Serve locally, run the page for `seconds` of speech, measure, write JSON to `out`. The
    offset means something only while the session kept its renderer: on a machine too busy to
    render in time it falls back to `static` (a still mouth), which `renderer_fallbacks` shows."""
    from lipstream.bench.load import ServerProcess

    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wav = speech_wav(tmp / "speech.wav", seconds + 8)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        recording = (keep or tmp) / "webrtc-recording.webm"
        avatars = tmp / "avatars"
        small_portrait(avatars / SMALL_AVATAR, tmp / "portrait.png")
        with ServerProcess(workers=2, max_sessions=2, avatars_dir=str(avatars)) as server:
            page = record_page(server.http, wav, seconds, recording, tmp / "profile", preset, width,
                               avatar=SMALL_AVATAR)
        figures = recording_figures(recording)
    results = {"machine": machine_info(), "load_average": {"before": load_before,
                                                          "after": [round(x, 2) for x in os.getloadavg()]}, "preset": preset, "width": width,
               "bars": {"received_fps": FPS_BAR, "sync_ms": SYNC_BAR_MS}, **page, **figures,
               "holds": page["received_fps"] >= FPS_BAR and abs(figures["offset_ms"]) <= SYNC_BAR_MS
               and not page["renderer_fallbacks"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _difference(stats: dict, key: str) -> float | None:
    video, audio = stats.get("video", {}).get(key), stats.get("audio", {}).get(key)
    return None if video is None or audio is None else round(video - audio, 1)


def _plain(metrics) -> dict:
    """The evaluator's figures that are plain numbers."""
    fields = getattr(metrics, "__dataclass_fields__", {})
    return {k: round(v, 3) if isinstance(v, float) else v for k in fields
            if isinstance(v := getattr(metrics, k), (int, float, str, bool)) and not isinstance(v, np.ndarray)}
