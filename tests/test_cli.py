"""The command line: bad input gets a clear message and exit code, never a traceback or a partial file."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lipstream.cli import app
from lipstream.errors import BadAudioError, BadAvatarError, BadVideoError, RenderFailedError

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


@pytest.mark.parametrize("option,value,valid", [("--quality", "nope", "'fast', 'standard', 'high'"),
                                                ("--renderer", "tpsm", "'auto', 'static', 'warp'"),
                                                ("--driver", "wav2lip", "'energy', 'viseme', 'phoneme'"),
                                                ("--audio-codec", "mp3", "'aac', 'pcm', 'flac', 'copy'")])
def test_choices_are_checked_before_any_work(tmp_path, option, value, valid):
    """A typo fails at once (exit 2, naming the valid values), before the audio is even opened."""
    result = _run("render", "--audio", tmp_path / "missing.wav", "-o", tmp_path / "o.mp4", option, value)
    assert result.exit_code == 2 and valid in " ".join(result.output.split()).replace("│ ", "")
    assert not (tmp_path / "o.mp4").exists()


def test_cli_choices_match_the_registries():
    from lipstream import cli
    from lipstream.motion.drivers import DRIVER_NAMES
    from lipstream.render.base import renderer_names
    from lipstream.select.choose import PRESETS
    from lipstream.sinks.mp4 import AUDIO_CODECS, QUALITY

    assert [c.value for c in cli.Quality] == list(QUALITY)
    assert sorted(c.value for c in cli.RendererChoice) == sorted(renderer_names() + ["auto"])
    assert [c.value for c in cli.DriverChoice] == list(DRIVER_NAMES)
    assert [c.value for c in cli.AudioCodec] == list(AUDIO_CODECS)
    assert [c.value for c in cli.SelectPreset] == list(PRESETS)


def test_pcm_audio_in_an_mp4_is_refused_before_work(tmp_path, speech_path):
    result = _run("render", "--audio", speech_path, "-o", tmp_path / "o.mp4", "--audio-codec", "pcm")
    assert result.exit_code == 5 and ".mov or .mkv" in result.output
    assert list(tmp_path.iterdir()) == []


def test_sheet_lays_out_every_nth_frame_with_its_time(tmp_path):
    from lipstream.sinks.mp4 import Mp4Writer

    video = tmp_path / "count.mp4"
    with Mp4Writer(video, 25, (64, 48)) as writer:
        for k in range(50):
            writer.write(np.full((48, 64, 3), 5 * k, np.uint8))
    out = tmp_path / "sheet.png"
    result = _run("sheet", video, "-o", out, "--every", 5, "--seconds", 1, "--columns", 3)
    assert result.exit_code == 0 and out.exists()
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * 120, 3 * 160, 3)  # frames 0, 5, 10, 15, 20 in 3 columns, 160 px tiles (4:3)
    tiles = [sheet[r * 120 + 60 : r * 120 + 110, c * 160 + 40 : c * 160 + 150] for r in range(2) for c in range(3)]
    levels = [float(t.mean()) for t in tiles[:5]]
    assert all(abs(level - 25 * i) < 4 for i, level in enumerate(levels)), levels  # frame k has level 5k
    assert tiles[5].min() == 255  # the unused tile stays white
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 10)
    result = _run("sheet", bad, "-o", tmp_path / "x.png")
    assert result.exit_code == BadVideoError.exit_code and "could not be read" in result.output
