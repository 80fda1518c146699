"""Shared fixtures: the bundled portrait and speech, a prepared default avatar, a private cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lipstream.audio import load_audio
from lipstream.avatar.package import AvatarPackage, load_package
from lipstream.avatar.prepare import prepare
from lipstream.avatar.resolve import bundled_asset


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Avatars prepared on the fly go to a temporary cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LIPSTREAM_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    return bundled_asset("portrait.png")


@pytest.fixture(scope="session")
def speech_path() -> Path:
    return bundled_asset("speech.wav")


@pytest.fixture(scope="session")
def speech(speech_path) -> np.ndarray:
    return load_audio(speech_path)


@pytest.fixture(scope="session")
def default_avatar(tmp_path_factory, portrait_path) -> AvatarPackage:
    return load_package(prepare(portrait_path, tmp_path_factory.mktemp("avatars") / "default"))


@pytest.fixture(scope="session")
def small_avatar(tmp_path_factory) -> Path:
    """The bundled portrait at 256 x 256, prepared (the voice-agent plugins' tests)."""
    from lipstream.integrations.bench import small_avatar

    return small_avatar(tmp_path_factory.mktemp("small-avatar"))


def espeak(text: str, path: Path) -> Path:
    """Speak `text` into a wav with espeak-ng (a Debian package .ci/run installs)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed for the tests: apt-get install espeak-ng")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path


def write_mp4(path: Path, frames, fps: int = 25) -> Path:
    """Encode RGB uint8 frames (H x W x 3, all one even size) as an H.264 mp4 without audio."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path
