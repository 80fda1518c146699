"""`lipstream batch --ray`: a manifest of 8 clips, one with a missing input, on a pool of Ray
actors: 7 videos and 1 error row; a re-run renders nothing."""

from __future__ import annotations

import json
import subprocess

import av

from ray_local import local_ray  # noqa: F401 (the fixture)
from lipstream.batch import read_manifest, run_batch


def espeak(text: str, path) -> None:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)  # tests/conftest.py's, which this folder's shadows


def test_eight_clips_on_ray_actors(local_ray, tmp_path, default_avatar):
    lines = []
    for i in range(8):
        audio = f"c{i}.wav" if i != 5 else "missing.wav"
        if i != 5:
            espeak(f"clip {i}, hello", tmp_path / audio)
        lines.append({"id": f"clip-{i}", "audio": audio, "avatar": str(default_avatar.path), "renderer": "warp"})
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    seen = []
    rows = run_batch(read_manifest(manifest), str(out), ray_address="local", workers=2, progress=seen.append)
    assert [r["id"] for r in rows] == [f"clip-{i}" for i in range(8)] and len(seen) == 8
    failed = [r for r in rows if not r["ok"]]
    assert [r["id"] for r in failed] == ["clip-5"] and failed[0]["kind"] == "BadAudioError"
    videos = sorted(p.name for p in out.iterdir())
    assert videos == sorted(f"clip-{i}.mp4" for i in range(8) if i != 5)
    for row in rows:
        if row["ok"]:
            with av.open(row["output"]) as video:
                assert video.streams.video[0].frames == row["frames"] > 0
    again = run_batch(read_manifest(manifest), str(out), ray_address="local", workers=2)
    assert [r.get("skipped", False) for r in again] == [i != 5 for i in range(8)]
