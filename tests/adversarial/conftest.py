"""The server the attacks run against: a real `lipstream serve --token` on loopback (2 workers,
small limits so that the tests stay short), and the speech a normal session streams meanwhile."""

from __future__ import annotations

import numpy as np
import pytest

from live_server import start_server, stop_server
from lipstream.audio import load_audio
from lipstream.avatar.resolve import bundled_asset

TOKEN = "adversarial-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="package")  # stopped once the attacks are done, not at the end of the suite
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("attacked"), token=TOKEN, max_sessions=4, idle_timeout_s=10.0,
                     max_upload_bytes=8 * 2**20, max_video_s=30.0, max_audio_s=120.0, job_timeout_s=120.0,
                     log_level="info")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def speech16() -> tuple[np.ndarray, int]:
    """The bundled speech as int16 mono at 16 kHz."""
    samples = load_audio(bundled_asset("speech.wav"))
    return (samples * 32767).astype(np.int16), 16000
