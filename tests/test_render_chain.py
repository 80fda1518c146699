"""`auto` renderer choice from measured profiles, and the fallback chain it builds."""

from __future__ import annotations

from lipstream.select import Profile, ProfileSet, save_profiles
from lipstream.session.render_chain import HALF_RATE_MISSES, MAX_MISSES, RenderChain, auto_steps
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
    for _ in range(HALF_RATE_MISSES):
        session.chain.record(True)
    assert session.chain.half_rate and session.chain.name == "warp"  # every other frame first
    for _ in range(MAX_MISSES):
        session.chain.record(True)
    assert session.chain.name == "static" and session.chain.changes[-1].reason == "deadline"
    assert not session.chain.half_rate  # the next renderer starts at full rate


class _SlowRenderer:
    """Wraps a renderer; every render advances the manual clock by `seconds`."""

    def __init__(self, inner, clock, seconds):
        self.inner, self.clock, self.seconds = inner, clock, seconds
        self.name = inner.name

    def render_frame(self, k, params):
        self.clock.advance(self.seconds)
        return self.inner.render_frame(k, params)


def _timed_session(default_avatar, clock, render_s):
    session = Session(default_avatar, preset="ultra_low", size=(64, None), clock=clock, profiles=[],
                      renderer="warp")
    session.chain.renderer = _SlowRenderer(session.chain.renderer, clock, render_s)
    return session


def test_a_renderer_slower_than_real_time_on_average_falls_back(default_avatar, speech):
    from lipstream.session import ManualClock

    clock = ManualClock()
    session = _timed_session(default_avatar, clock, render_s=0.05)  # 50 ms a frame at 25 fps
    session.push_audio(speech[: 2 * 16000], 16000)
    session.flush()
    session.poll()
    # first every other frame (50 ms in the 80 ms two frames last): no fallback
    assert session.chain.half_rate and session.chain.changes == []
    assert "on average" in session.chain.rate_changes[0].detail
    session.chain.renderer.seconds = 0.1  # slower than two frame periods: half rate can't keep up either
    session.push_audio(speech[2 * 16000 : 6 * 16000], 16000)
    session.flush()
    session.poll()
    assert [c.reason for c in session.chain.changes] == ["deadline"]
    assert "on average" in session.chain.changes[0].detail and session.chain.name == "static"


def test_stretched_single_renders_and_slow_idle_frames_do_not_fall_back(default_avatar, speech):
    from lipstream.session import ManualClock

    clock = ManualClock()
    session = _timed_session(default_avatar, clock, render_s=0.12)
    for _ in range(40):  # idle frames taking 3 frame periods each: nobody waits on them
        clock.advance(0.04)
        session.poll()
    assert session.chain.changes == []
    session.push_audio(speech[: 2 * 16000], 16000)
    session.flush()
    for i in range(60):  # every 8th frame of speech preempted to 120 ms: a mean of 24 ms, under 40
        session.chain.renderer.seconds = 0.12 if i % 8 == 7 else 0.01
        session.poll(limit=1)
    assert session.chain.changes == [] and session.chain.name == "warp"


def test_a_photo_is_drawn_at_the_frame_size_not_drawn_big_and_resized(default_avatar):
    """warp and static draw a photo at the session's frame size (a quarter of the pixels at half
    the avatar's width); the frame matches the one drawn at the avatar's size and area-averaged
    down, and landmarks and boxes are scaled with it."""
    import cv2
    import numpy as np

    from lipstream.avatar.package import photo_at_size

    width, height = default_avatar.size
    half = (width // 2, height // 2)
    small = photo_at_size(default_avatar, half)
    assert small.size == half and small.frames.shape == (1, half[1], half[0], 3)
    assert np.allclose(small.landmarks, np.asarray(default_avatar.landmarks) / 2)
    box, big_box = small.mouth_boxes[0], np.asarray(default_avatar.mouth_boxes[0])
    assert np.all(np.abs(box - big_box / 2) <= 1)
    params = np.array([0.8, 0.2, 0.0, 0.5], np.float32)
    for name in ("warp", "static"):
        drawn = RenderChain(default_avatar, name, 0.04, size=half).render(30, params)
        big = RenderChain(default_avatar, name, 0.04).render(30, params)
        assert drawn.shape == (half[1], half[0], 3) and big.shape == (height, width, 3)
        reference = cv2.resize(big, half, interpolation=cv2.INTER_AREA).astype(float)
        psnr = 10 * np.log10(255**2 / np.mean((reference - drawn) ** 2))
        assert psnr > 35, (name, psnr)
    # a size not smaller than the avatar's keeps the avatar's own
    assert RenderChain(default_avatar, "warp", 0.04, size=(width, height)).render(0, params).shape == (height, width, 3)
