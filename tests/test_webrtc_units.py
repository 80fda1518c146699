"""The WebRTC peer's timing and congestion logic on an injected clock: the playout timeline that
both outgoing tracks read, and the quality ladder that follows the receiver's estimate."""

from __future__ import annotations

import numpy as np
import pytest

from lipstream.server.webrtc.playout import AUDIO_PACKET_TICKS, OUT_RATE_HZ, Playout
from lipstream.server.webrtc.quality import DOWN_HOLD_S, LADDER, START_RUNG, UP_HOLD_S, QualityLadder
from lipstream.session.clock import ManualClock
from lipstream.stream.events import FrameOut

SPAN = 640  # 16 kHz ticks per frame at 25 fps
SAMPLES = 1920  # 48 kHz samples per frame at 25 fps


def frame(k: int, value: int = 1000, idle: bool = False) -> FrameOut:
    audio = b"" if idle else np.full(SAMPLES, value + k, "<i2").tobytes()
    return FrameOut(k, k * SPAN, 0 if idle else SPAN, b"", True, idle, 0.0, 1e9, "warp", np.zeros(4, np.float32),
                    audio=audio, sample_rate=0 if idle else OUT_RATE_HZ, channels=0 if idle else 1)


def take_all(playout: Playout, clock: ManualClock, seconds: float) -> np.ndarray:
    out = []
    for _ in range(round(seconds / 0.02)):
        clock.advance(0.02)
        out.append(playout.take_audio()[1])
    return np.concatenate(out)


def test_a_run_of_frames_sits_on_its_own_audio_contiguously():
    clock = ManualClock()
    playout = Playout(clock.now, margin_s=0.1)
    playout.begin()
    placed = [playout.place(frame(k)) for k in range(10)]
    first = placed[0].tick
    assert first == round(0.1 * OUT_RATE_HZ)  # a run starts the margin ahead of now
    assert [p.tick - first for p in placed] == [k * SAMPLES for k in range(10)]
    assert placed[3].video_pts == placed[3].tick * 90000 // OUT_RATE_HZ
    audio = take_all(playout, clock, 0.6)
    assert not audio[:first].any()  # silence before the run
    for k in range(10):  # each frame's audio plays from exactly its video tick
        assert (audio[first + k * SAMPLES : first + (k + 1) * SAMPLES] == 1000 + k).all()
    assert playout.underruns == 0


def test_a_late_frame_restarts_the_run_later_without_losing_or_moving_audio():
    clock = ManualClock()
    playout = Playout(clock.now, margin_s=0.1)
    playout.begin()
    early = [playout.place(frame(k)) for k in range(3)]
    take_all(playout, clock, 0.5)  # the audio track ran past the run's end: the next frame is late
    late = playout.place(frame(3))
    assert playout.underruns == 1
    assert late.tick >= playout.audio_sent and late.tick > early[-1].tick + SAMPLES
    assert late.tick == playout.playhead() + round(0.1 * OUT_RATE_HZ)
    audio = take_all(playout, clock, 0.3)
    start = late.tick - (playout.audio_sent - len(audio))
    assert (audio[start : start + SAMPLES] == 1003).all()


def test_idle_frames_advance_in_real_time_and_speech_follows_them():
    clock = ManualClock()
    playout = Playout(clock.now, margin_s=0.1)
    playout.begin()
    ticks = []
    for _ in range(5):
        ticks.append(playout.place(frame(0, idle=True)).tick)
        clock.advance(0.04)
    speech = playout.place(frame(0))
    assert ticks == sorted(set(ticks)) and ticks[1] - ticks[0] == round(0.04 * OUT_RATE_HZ)
    assert speech.tick > ticks[-1]


def test_frames_before_the_timeline_begins_are_dropped():
    clock = ManualClock()
    playout = Playout(clock.now, margin_s=0.1)
    assert playout.place(frame(0, idle=True)) is None and not playout.video
    clock.advance(2.0)  # connecting took 2 s: none of it is sent later in a burst
    playout.begin()
    assert playout.place(frame(0)).tick == round(0.1 * OUT_RATE_HZ)
    assert playout.take_audio()[0] == 0


def test_audio_at_another_rate_is_refused():
    playout = Playout(ManualClock().now, margin_s=0.1)
    playout.begin()
    bad = frame(0)
    bad.sample_rate = 16000
    with pytest.raises(ValueError, match="48000"):
        playout.place(bad)


def test_packets_are_20_ms_and_cover_the_timeline_without_gaps():
    clock = ManualClock()
    playout = Playout(clock.now, margin_s=0.0)
    playout.begin()
    starts = [playout.take_audio()[0] for _ in range(5)]
    assert starts == [n * AUDIO_PACKET_TICKS for n in range(5)] and AUDIO_PACKET_TICKS == 960


def test_congestion_steps_bitrate_then_resolution_then_fps_and_recovery_climbs_back():
    ladder, t = QualityLadder(), 0.0
    assert ladder.index == START_RUNG
    steps = []
    sent = 300_000.0
    for _ in range(12):  # the receiver's estimate at 0.85x of what is sent: a link that can't keep up
        t += DOWN_HOLD_S
        steps += ladder.update(0.85 * sent, sent, t)
        sent *= 0.8
    knobs = [s.knob for s in steps]
    assert all(s.direction == "down" for s in steps)
    assert knobs == ["bitrate"] * knobs.count("bitrate") + ["resolution"] * 2 + ["fps"] * 2
    assert ladder.rung == LADDER[-1] and ladder.rung.fps == 15 and ladder.rung.scale == 0.5
    ups = []
    for _ in range(40):  # the estimate climbs to 1.5x of what is sent: room again
        t += 0.5
        ups += ladder.update(1.5 * sent, sent, t)
    assert [s.direction for s in ups] == ["up"] * len(ups) and ladder.index == 0
    assert [s.knob for s in ups][:4] == ["fps", "fps", "resolution", "resolution"]
    gaps = np.diff([0.0] + [u.index for u in ups])
    assert len(ups) == len(LADDER) - 1 and (gaps != 0).all()


def test_one_low_estimate_or_a_short_recovery_does_not_step():
    ladder = QualityLadder()
    assert ladder.update(100_000, 200_000, 0.0) == []  # a keyframe's burst can look like this once
    assert ladder.update(300_000, 200_000, 1.0) == []
    assert ladder.update(300_000, 200_000, 1.0 + UP_HOLD_S / 2) == []  # room, but not for long enough
    assert ladder.update(200_000, 200_000, 1.0 + UP_HOLD_S) == []
    assert ladder.index == START_RUNG
    assert ladder.update(300_000, 0, 10.0) == []  # nothing sent yet: nothing to compare
