"""`lipstream bench` profiles on the bundled avatar: real renders measured by the evaluator,
written as profiles the selector reads."""

from __future__ import annotations

import json

from conftest import espeak

from lipstream.bench.profiles import backends_for, run_profiles, write_report
from lipstream.select import choose, load_profiles, preset_constraints
from lipstream.select.choose import violation


def test_profiles_of_the_bundled_photo_avatar(tmp_path, default_avatar, monkeypatch):
    monkeypatch.setenv("LIPSTREAM_PROFILES", str(tmp_path / "machine-profiles.json"))
    assert [b.renderer for b in backends_for(default_avatar)] == ["static", "warp"]  # no footage, no model
    speech = espeak("we measure every backend on this machine, then choose the best one", tmp_path / "s.wav")
    profile_set = run_profiles("default", speech, drivers=("energy",))
    rows = {p.renderer: p for p in profile_set.profiles}
    assert set(rows) == {"static", "warp"}
    assert rows["static"].sync_offset_ms is None  # nothing to measure: its mouth never moves
    warp = rows["warp"]
    assert warp.fps > 5 and warp.latency_p95_ms > 0 and warp.peak_memory_mib > 50
    assert warp.driver == "energy" and warp.driver_ms_per_frame > 0 and warp.pipeline_fps < warp.fps
    assert abs(warp.sync_offset_ms) <= 80 and warp.sync_grade in ("A+", "A", "B")

    paths = write_report(profile_set, tmp_path / "out")
    assert {p.name for p in paths} == {"profiles.json", "report.md", "performance_vs_sync.png",
                                       "quantization_impact.png"}
    assert not (tmp_path / "machine-profiles.json").exists()  # a report alone leaves the machine's as they were
    assert write_report(profile_set, tmp_path / "out", install=True)[-1] == tmp_path / "machine-profiles.json"
    assert json.loads((tmp_path / "out" / "profiles.json").read_text())["machine"]["cores"] >= 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| warp | fp32 | cpu | energy |" in report and "`real_time`" in report
    # saved where `select` and `serve` look by default
    choice = choose(load_profiles().profiles, preset_constraints("real_time", min_fps=1))
    assert choice.profile.renderer == "warp"


def test_gpu_rows_carry_only_what_was_measured_on_the_gpu():
    from lipstream.bench.profiles import gpu_profiles
    from lipstream.select import Profile, ProfileSet

    cpu = ProfileSet([Profile("neural", "phoneme", variant="full/fp32", fps=12, model_mib=7.7, sync_offset_ms=-17,
                              sync_grade="A+", quality_psnr_db=27.0),
                      Profile("neural", "phoneme", variant="full/int8-static", precision="int8", fps=25,
                              sync_offset_ms=-20, sync_grade="A+"),
                      Profile("warp", "phoneme", fps=200, sync_offset_ms=-10, sync_grade="A+")], {})
    runner = {"machine": {"gpu": "NVIDIA H200"},
              "full/fp16": {"psnr_vs_onnx_fp32_db": 77.5, "runner_fps_batch32": 1538.0, "gpu_memory_mib": 744.0}}
    rows = gpu_profiles(cpu, runner)
    assert len(rows) == 1
    row = rows[0]
    assert (row.device, row.precision, row.variant, row.fps) == ("gpu", "fp16", "full/fp16", 1538.0)
    assert row.gpu_memory_mib == 744.0 and row.model_mib == 3.85 and row.measured_on == "NVIDIA H200"
    # nothing borrowed from the CPU rows: sync, quality, latency and the driver's cost were not measured there
    assert (row.sync_offset_ms, row.sync_grade, row.quality_psnr_db, row.latency_p95_ms,
            row.driver_ms_per_frame) == (None, None, None, None, None)
    assert "within 78 dB of the fp32 network" in row.note
    # so the selector does not rank it on sync it never measured
    both = cpu.profiles + rows
    assert choose(both, preset_constraints("real_time", min_fps=1, device="any")).profile.device == "cpu"
    assert violation(row, preset_constraints("real_time")) == "sync not measured"


def test_committed_profiles_hold_only_figures_measured_on_their_device():
    from pathlib import Path

    from lipstream.select import load_profiles

    profile_set = load_profiles(Path(__file__).parents[1] / "bench/results/profiles/profiles.json")
    gpu = [p for p in profile_set.profiles if p.device == "gpu"]
    assert gpu, "the committed set has GPU rows from the runner"
    for p in gpu:
        assert p.measured_on and p.sync_offset_ms is None and p.quality_psnr_db is None
        assert p.driver_ms_per_frame is None and p.driver == "none"
