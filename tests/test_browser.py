"""The demo page in real headless Chromium (Debian's, driven by Playwright): over the WebSocket,
frames arrive and the avatar is drawn in sync with the audio (a screenshot is kept as a test
artifact); over WebRTC, what the page receives is recorded and measured."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

import pytest

from conftest import espeak
from test_server import start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required",
                 # a fake microphone (a beep) and no permission prompt, for the microphone path
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("page-server"), max_sessions=2)
    yield s
    stop_server(s)


def test_demo_page_draws_the_talking_avatar(page_server, tmp_path):
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    speech = espeak("hello, I am the lipstream avatar and my lips move with my words", tmp_path / "hello.wav")
    profile = tmp_path / "profile"
    with playwright_api.sync_playwright() as pw:
        # a persistent context is how Playwright takes a fresh --user-data-dir of our choosing
        browser = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": 1000, "height": 700})
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_server.http + "/")
            page.wait_for_function("document.querySelectorAll('#avatar option').length >= 1")
            page.select_option("#transport", "ws")  # the fallback's own path (WebRTC has its test below)
            page.select_option("#preset", "low")
            page.set_input_files("#file", str(speech))
            page.click("#play")
            page.wait_for_function("window.lipstream.drawn >= 40", timeout=30_000)
            drawn = page.evaluate("window.lipstream.drawn")
            stats = page.evaluate("""() => {
                const c = document.getElementById('view'), g = c.getContext('2d');
                const d = g.getImageData(0, 0, c.width, c.height).data;
                let sum = 0, sq = 0, n = d.length / 4;
                for (let i = 0; i < d.length; i += 4) {
                    const y = (d[i] + d[i + 1] + d[i + 2]) / 3; sum += y; sq += y * y;
                }
                const mean = sum / n;
                return { width: c.width, mean, std: Math.sqrt(sq / n - mean * mean) };
            }""")
            shot = tmp_path / "demo-page.png"
            page.screenshot(path=str(shot))
            page.wait_for_function("document.getElementById('log').textContent.includes('file sent')", timeout=30_000)
            # A dispatched click: under CPU load the page relayouts every frame (counters), and a
            # pointer click that Playwright retries for "stability" could land after the first
            # one had already stopped the session (and disabled the button).
            page.dispatch_event("#stop", "click")
            page.wait_for_function("!document.getElementById('mic').disabled")
            before_mic = page.evaluate("window.lipstream.drawn")
            page.click("#mic")
            page.wait_for_function(f"window.lipstream.drawn >= {before_mic + 20}", timeout=30_000)
            log = page.evaluate("document.getElementById('log').textContent")
            page.dispatch_event("#stop", "click")
        finally:
            browser.close()
    assert not errors, errors
    assert drawn >= 40
    assert "microphone on" in log and "error" not in log, log
    assert stats["width"] == 256 and stats["std"] > 20  # a face, not a blank or flat canvas
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_demo_page_over_webrtc_receives_the_avatar_and_voice(page_server, tmp_path):
    """WebRTC, the page's default: Chromium's fake microphone plays speech, the page records what
    it receives (MediaRecorder), and the recording holds the avatar and the voice, decodes, and
    lipstream eval measures it. Asserts behaviour only: the fps and sync bars are `lipstream bench
    webrtc`'s (on a loaded 2-core machine the session may fall back to a still mouth)."""
    from lipstream.bench.webrtc import SMALL_AVATAR, record_page, recording_figures, small_portrait, speech_wav

    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    wav = speech_wav(tmp_path / "speech.wav", min_seconds=8)
    small_portrait(page_server.avatars / SMALL_AVATAR, tmp_path / "portrait.png")  # cheap to draw at 256 px
    recording = tmp_path / "received.webm"
    page = record_page(page_server.http, wav, 6.0, recording, tmp_path / "profile", warmup_s=1.0,
                       avatar=SMALL_AVATAR)
    assert not page["page_errors"], page["page_errors"]
    assert any("WebRTC connected" in line for line in page["log"]) and not any("error" in line for line in page["log"])
    assert page["video_frames"]["framesReceived"] >= 6 * 10  # frames keep arriving (the bench's bar: 24 fps)
    assert page["audio_seconds_received"] >= 5  # the voice comes back
    assert page["frame_size"][0] in (128, 192, 256)
    figures = recording_figures(recording)  # decodes, and eval finds an offset (bar: 60 ms, in the bench)
    assert figures["recorded_frames"] >= 6 * 10
    assert figures["recorded_audio_codec"].startswith("pcm")  # not Opus, whose packets the recorder stamps late
    assert abs(figures["offset_ms"]) <= 1000
    assert figures["eval"]["speech_share"] > 0.3  # the recording's audio is the voice
    deadline = time.monotonic() + 15
    while httpx.get(f"{page_server.http}/health").json()["sessions"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{page_server.http}/health").json()["sessions"] == 0  # Stop closed the peer: slot freed
