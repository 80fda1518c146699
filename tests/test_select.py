"""The selector on hand-made profiles: hard constraints, presets, ranking, reasons, refusals."""

from __future__ import annotations

import json

import pytest

from lipstream.errors import LipstreamError, NotSupportedError
from lipstream.select import Constraints, Profile, ProfileSet, choose, load_profiles, preset_constraints, save_profiles

PROFILES = [
    Profile("static", "viseme", fps=500, sync_offset_ms=None, sync_grade=None),
    Profile("warp", "viseme", fps=150, latency_p95_ms=8, sync_offset_ms=-35, sync_grade="A", quality_psnr_db=22.0),
    Profile("bank", "phoneme", fps=450, sync_offset_ms=-20, sync_grade="A", quality_psnr_db=24.0),
    Profile("neural", "phoneme", variant="full", precision="fp32", fps=3.5, model_mib=19.6,
            sync_offset_ms=-8, sync_grade="A+", quality_psnr_db=28.0),
    Profile("neural", "phoneme", variant="full", precision="fp16", device="gpu", fps=1500, model_mib=9.8,
            sync_offset_ms=-8, sync_grade="A+", quality_psnr_db=28.0),
    Profile("neural", "phoneme", variant="lite", precision="int8", fps=60, model_mib=0.3,
            sync_offset_ms=-12, sync_grade="A+", quality_psnr_db=26.5),
    Profile("neural", "phoneme", variant="lite", precision="fp32", fps=45, model_mib=1.1,
            sync_offset_ms=-12, sync_grade="A+", quality_psnr_db=26.9),
]


def test_hard_constraints_exclude_and_are_counted():
    choice = choose(PROFILES, Constraints(min_fps=25, device="cpu", max_sync_ms=40))
    assert choice.profile.device == "cpu" and choice.profile.fps >= 25
    assert all(abs(p.sync_offset_ms) <= 40 and p.device == "cpu" for p, _ in choice.ranked)
    assert choice.excluded == {"not on cpu": 1, "under 25 fps": 1, "sync not measured": 1}


def test_sync_weight_trades_speed_for_fidelity():
    fast = choose(PROFILES, Constraints(device="cpu", max_sync_ms=80, sync_weight=0.0)).profile
    careful = choose(PROFILES, Constraints(device="cpu", max_sync_ms=80, sync_weight=1.0)).profile
    assert fast.renderer == "bank"  # the fastest with measured sync
    assert (careful.renderer, careful.precision) == ("neural", "fp32")  # best sync and quality


def test_presets_pick_what_they_promise():
    picks = {name: choose(PROFILES, preset_constraints(name)).profile for name in
             ("high_quality", "real_time", "mobile", "precision")}
    assert picks["high_quality"].backend == "neural:full"
    assert picks["real_time"].fps >= 25 and abs(picks["real_time"].sync_offset_ms) <= 80
    assert picks["mobile"].device == "cpu" and picks["mobile"].model_mib <= 10 and picks["mobile"].fps >= 25
    neural_only = choose(PROFILES, preset_constraints("mobile", renderers=("neural",))).profile
    assert (neural_only.variant, neural_only.precision) == ("lite", "int8")  # preferred, small and fast
    assert not picks["precision"].quantized


def test_a_backend_without_measured_sync_is_never_chosen():
    choice = choose(PROFILES, Constraints(sync_weight=0.0))  # speed only: static would win on fps
    assert choice.profile.renderer != "static" and choice.excluded == {"sync not measured": 1}


def test_quantisation_can_be_refused_and_renderers_limited():
    choice = choose(PROFILES, Constraints(device="cpu", min_fps=25, allow_quantization=False, renderers=("neural",)))
    assert choice.profile.backend == "neural:lite" and choice.profile.precision == "fp32"


def test_reason_names_the_figures_and_the_runner_up():
    choice = choose(PROFILES, preset_constraints("real_time", device="cpu"))
    assert choice.profile.label() in choice.reason and "fps" in choice.reason and "next:" in choice.reason


def test_nothing_feasible_says_what_came_closest():
    with pytest.raises(NotSupportedError, match="fastest: neural:full fp16 on gpu"):
        choose(PROFILES, Constraints(min_fps=5000))
    with pytest.raises(NotSupportedError, match="run `lipstream bench`"):
        choose([], Constraints())


def test_profiles_round_trip_and_bad_files(tmp_path):
    path = save_profiles(ProfileSet(PROFILES, {"cpu": "test"}, "x"), tmp_path / "p.json")
    loaded = load_profiles(path)
    assert loaded.profiles == PROFILES and loaded.machine == {"cpu": "test"}
    with pytest.raises(LipstreamError, match="run `lipstream bench`"):
        load_profiles(tmp_path / "missing.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 0, "profiles": []}))
    with pytest.raises(LipstreamError, match="schema version"):
        load_profiles(tmp_path / "old.json")


def test_select_command_prints_the_pick_and_refuses_clearly(tmp_path):
    from typer.testing import CliRunner

    from lipstream.cli import app

    path = save_profiles(ProfileSet(PROFILES, {"cpu": "test"}), tmp_path / "p.json")
    runner = CliRunner()
    ok = runner.invoke(app, ["select", "--preset", "real_time", "--device", "cpu", "--profiles", str(path)])
    assert ok.exit_code == 0 and "use bank (fp32, cpu, driver phoneme)" in ok.output and "why:" in ok.output
    none = runner.invoke(app, ["select", "--min-fps", "9999", "--profiles", str(path)])
    assert none.exit_code == NotSupportedError.exit_code and "fastest:" in none.output
    missing = runner.invoke(app, ["select", "--profiles", str(tmp_path / "none.json")])
    assert missing.exit_code != 0 and "run `lipstream bench`" in missing.output and "Traceback" not in missing.output


def test_min_fps_counts_the_driver_time():
    slow_driver = Profile("warp", "phoneme", fps=100, driver_ms_per_frame=30, sync_offset_ms=0, sync_grade="A+")
    assert slow_driver.pipeline_fps == pytest.approx(25.0)
    with pytest.raises(NotSupportedError):
        choose([slow_driver], Constraints(min_fps=30))
    assert choose([slow_driver], Constraints(min_fps=20)).profile is slow_driver
