"""`lipstream batch` on local processes: manifest checks up front, fixed output names, error rows,
re-runs that skip what is done."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import espeak
from lipstream.batch import read_manifest
from lipstream.cli import app
from lipstream.errors import NotSupportedError


def write_manifest(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


@pytest.mark.parametrize("rows, message", [
    (['{"id": "a", "audio": "x.wav"}', "{nope"], "line 2 is not JSON"),
    ([{"id": "a", "audio": "x.wav"}, {"id": "a", "audio": "y.wav"}], "used twice"),
    ([{"id": "a", "audio": "x.wav", "colour": "red"}], "unknown key(s) colour"),
    ([{"id": "../a", "audio": "x.wav"}], "id must be a name"),
    ([{"id": "a", "audio": "x.wav", "quality": "nope"}], "quality must be one of"),
    ([], "lists no clips"),
])
def test_a_bad_manifest_is_refused_naming_the_line(tmp_path, rows, message):
    write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(NotSupportedError) as caught:
        read_manifest(tmp_path / "m.jsonl")
    assert message in str(caught.value)


def test_relative_paths_are_read_from_the_manifest_folder(tmp_path):
    write_manifest(tmp_path / "m.jsonl", [{"id": "a", "audio": "x.wav", "size": "320x240"},
                                          {"id": "b", "audio": "s3://bucket/y.wav", "avatar": "default"}])
    a, b = read_manifest(tmp_path / "m.jsonl")
    assert a.audio == str(tmp_path / "x.wav") and a.options == {"size": (320, 240)}
    assert b.audio == "s3://bucket/y.wav" and b.avatar == "default"


def test_batch_cli_renders_reports_errors_and_skips_on_rerun(tmp_path, default_avatar):
    espeak("hello there", tmp_path / "hi.wav")
    write_manifest(tmp_path / "m.jsonl", [{"id": "hi", "audio": "hi.wav", "avatar": str(default_avatar.path)},
                                          {"id": "gone", "audio": "missing.wav"}])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "m.jsonl"), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert "1 rendered, 0 already there, 1 failed" in result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["hi", "gone"] and rows[0]["ok"] and rows[0]["frames"] > 0
    assert not rows[1]["ok"] and "missing.wav not found" in rows[1]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["hi.mp4", "results.jsonl"]  # nothing half-written
    mtime = (out / "hi.mp4").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["batch", str(tmp_path / "m.jsonl"), "--out", str(out), "--workers", "1"])
    assert "0 rendered, 1 already there, 1 failed" in again.output
    assert (out / "hi.mp4").stat().st_mtime_ns == mtime
