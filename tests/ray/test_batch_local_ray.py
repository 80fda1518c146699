"""`lipstream batch --ray local` with no Ray running: the batch starts Ray, renders clips in
this process from the first (while Ray starts) to the last, beside one actor (--workers 2: this
process is one of them), and shuts Ray down at the end."""

from __future__ import annotations

import json
import subprocess

import pytest

from ray_local import _ray
from lipstream.batch import read_manifest, run_batch


def test_local_ray_started_by_the_batch(tmp_path, default_avatar, monkeypatch):
    ray = _ray()
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    lines = []
    for i in range(4):
        subprocess.run(["espeak-ng", "-w", str(tmp_path / f"c{i}.wav"), f"clip {i}"], check=True)
        lines.append({"id": f"clip-{i}", "audio": f"c{i}.wav", "avatar": str(default_avatar.path), "renderer": "warp"})
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = run_batch(read_manifest(manifest), str(tmp_path / "out"), ray_address="local", workers=2)
    assert [r["id"] for r in rows] == [f"clip-{i}" for i in range(4)] and all(r["ok"] for r in rows)
    assert rows[0]["worker"] == "here" and {r["worker"] for r in rows} <= {"here", "ray"}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [f"clip-{i}.mp4" for i in range(4)]
    assert not ray.is_initialized()
