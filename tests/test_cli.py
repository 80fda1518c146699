"""The command line: bad input gets a clear message and exit code, never a traceback or a partial file."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lipstream.cli import app
from lipstream.errors import BadAudioError, BadAvatarError, RenderFailedError

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_unreadable_audio(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage" * 10)
    out = tmp_path / "o.mp4"
    result = _run("render", "--audio", bad, "-o", out)
    assert result.exit_code == BadAudioError.exit_code
    assert "could not be decoded" in result.output
    assert not out.exists()


def test_silent_audio(tmp_path):
    from scipy.io import wavfile

    silent = tmp_path / "silent.wav"
    wavfile.write(silent, 16000, np.zeros(32000, np.int16))
    result = _run("render", "--audio", silent, "-o", tmp_path / "o.mp4")
    assert result.exit_code == BadAudioError.exit_code and "silent" in result.output
    assert list(tmp_path.iterdir()) == [silent]


def test_no_face_avatar(tmp_path, speech_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 90, np.uint8))
    result = _run("render", "--avatar", blank, "--audio", speech_path, "-o", tmp_path / "o.mp4")
    assert result.exit_code == BadAvatarError.exit_code and "no face" in result.output
    assert not (tmp_path / "o.mp4").exists()


def test_unknown_avatar_and_unwritable_output(tmp_path, speech_path):
    result = _run("render", "--avatar", "nobody", "--audio", speech_path, "-o", tmp_path / "o.mp4")
    assert result.exit_code == BadAvatarError.exit_code and "not found" in result.output
    result = _run("render", "--audio", speech_path, "-o", tmp_path / "missing" / "o.mp4")
    assert result.exit_code == RenderFailedError.exit_code and "does not exist" in result.output


def test_corrupt_package(tmp_path, speech_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "manifest.json").write_text("{}")
    result = _run("info", pkg)
    assert result.exit_code == BadAvatarError.exit_code and "schema" in result.output


def test_info_and_help():
    result = _run("info", "default")
    assert result.exit_code == 0 and "image" in result.output and "512x512" in result.output
    for command in ("render", "prepare", "demo", "info"):
        assert _run(command, "--help").exit_code == 0


@pytest.mark.slow
def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lipstream.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "render" in result.stdout
