"""`auto` renderer choice from measured profiles, and the fallback chain it builds."""

from __future__ import annotations

from lipstream.select import Profile, ProfileSet, save_profiles
from lipstream.session.render_chain import MAX_MISSES, RenderChain, auto_steps
from lipstream.session import Session


def profiles(warp_fps=200.0, warp_sync=-10.0):
    return [
        Profile("static", "none", fps=500),
        Profile("warp", "energy", fps=warp_fps, driver_ms_per_frame=0.5, sync_offset_ms=warp_sync, sync_grade="A+"),
        Profile("bank", "energy", fps=600, driver_ms_per_frame=0.5, sync_offset_ms=-5, sync_grade="A+"),
        Profile("neural", "energy", variant="lite/int8-static", precision="int8", fps=80, driver_ms_per_frame=0.5,
                sync_offset_ms=-3, sync_grade="A+"),
    ]


def test_auto_uses_the_selector_among_what_the_avatar_can_use(default_avatar):
    steps = auto_steps(default_avatar, 25.0, "energy", profiles())
    # a photo has no footage (bank) and no trained network (neural): warp, then static
    assert [step for step, _ in steps] == [("warp", {}), ("static", {})]
    chain = RenderChain(default_avatar, "auto", 1 / 25, "energy", profiles())
    assert chain.name == "warp" and "warp fp32 on cpu, driver energy" in chain.reason


def test_auto_without_a_fitting_profile_uses_the_default_chain(default_avatar):
    assert auto_steps(default_avatar, 25.0, "energy", profiles(warp_sync=-300.0)) == []
    chain = RenderChain(default_avatar, "auto", 1 / 25, "energy", profiles(warp_sync=-300.0))
    assert chain.name == "warp" and chain.reason == ""


def test_a_session_with_machine_profiles_reports_the_choice_and_falls_back_when_late(
        default_avatar, tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSTREAM_PROFILES", str(tmp_path / "profiles.json"))
    save_profiles(ProfileSet(profiles(), {"cpu": "test"}), tmp_path / "profiles.json")
    session = Session(default_avatar, preset="ultra_low", size=(128, None))
    assert session.chain.name == "warp" and session.chain.reason
    for _ in range(MAX_MISSES):
        session.chain.record(True)
    assert session.chain.name == "static" and session.chain.changes[-1].reason == "deadline"
