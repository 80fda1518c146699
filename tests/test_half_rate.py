"""A renderer that falls behind its deadlines, on a manual clock: the session renders every other
frame and blends the ones between instead of dropping frames or falling back, and goes back to
full rate once renders are quick again."""

import cv2
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE
from lipstream.session import Frame, ManualClock, Notice, Session
from lipstream.session.render_chain import MISS_WINDOW_FRAMES

FPS = 25
CHUNK_S = 0.02


def stream(session, clock, speech, seconds, cost):
    """Push `seconds` of speech in 20 ms chunks, each arriving on time on the clock (or at once
    if rendering ran past it); every render takes cost(frames rendered so far) seconds of the
    clock. Returns everything the session handed out."""
    renderer = session.chain.renderer
    render_frame = renderer.render_frame
    rendered = [0]

    def timed(k, params):
        clock.advance(cost(rendered[0]))
        rendered[0] += 1
        return render_frame(k, params)

    renderer.render_frame = timed
    pcm = np.round(np.clip(speech, -1, 1) * 32767).astype(np.int16)
    step, t0, out = int(CHUNK_S * SAMPLE_RATE), clock.now(), []
    for n, i in enumerate(range(0, int(seconds * SAMPLE_RATE), step)):
        arrival = t0 + n * CHUNK_S
        clock.t = max(clock.t, arrival)
        session.push_audio(pcm[i : i + step], SAMPLE_RATE, arrived_s=arrival)
        out += session.poll()
    session.flush()
    return out + session.poll()


def live(avatar, clock):
    return Session(avatar, preset="ultra_low", size=(64, None), clock=clock, profiles=[], renderer="warp",
                   idle_frames=False, drop_late=True)


def test_a_slow_renderer_renders_every_other_frame_and_blends_the_rest(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock)
    out = stream(session, clock, speech, 4.0, lambda n: 1.5 / FPS)  # 60 ms a frame: 25 fps can't be kept
    frames = [i for i in out if isinstance(i, Frame)]
    rates = [i.detail for i in out if isinstance(i, Notice) and i.event == "render_rate"]
    assert rates and rates[0]["halfRate"] is True and rates[0]["renderer"] == "warp"
    assert not [i for i in out if isinstance(i, Notice) and i.event == "fallback"]
    assert session.chain.name == "warp"
    # every frame of the audio goes out, in order; few late ones while it fell behind at first
    dropped = sum(i.detail["count"] for i in out if isinstance(i, Notice) and i.event == "dropped")
    assert len(frames) + dropped == 100 and dropped <= 8
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    later = frames[len(frames) // 2 :]
    blended = [f for f in later if f.interpolated]
    assert abs(len(blended) - len(later) / 2) <= 2  # every other one
    by_index = {f.index: f for f in frames}
    f = blended[3]
    before, after = by_index[f.index - 1], by_index[f.index + 1]
    assert not before.interpolated and not after.interpolated
    assert np.array_equal(f.image, cv2.addWeighted(before.image, 0.5, after.image, 0.5, 0.0))
    assert frames[-1].index == 99 and not frames[-1].interpolated  # the turn's last is rendered itself


def test_full_rate_comes_back_when_renders_are_quick_again(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock)
    out = stream(session, clock, speech, 6.0, lambda n: 1.5 / FPS if n < 30 else 0.2 / FPS)
    rates = [i.detail["halfRate"] for i in out if isinstance(i, Notice) and i.event == "render_rate"]
    assert rates == [True, False]
    frames = [i for i in out if isinstance(i, Frame)]
    back = max(k for k, f in enumerate(frames) if f.interpolated)
    assert back < len(frames) - MISS_WINDOW_FRAMES  # full rate for the rest
    assert not any(f.interpolated for f in frames[back + 1 :])


def test_without_deadlines_every_frame_is_rendered(default_avatar, speech):
    clock = ManualClock()
    session = Session(default_avatar, preset="ultra_low", size=(64, None), clock=clock, profiles=[],
                      renderer="warp", idle_frames=False, deadlines=False)
    out = stream(session, clock, speech, 2.0, lambda n: 1.5 / FPS)
    assert not any(i.interpolated for i in out if isinstance(i, Frame))
    assert not [i for i in out if isinstance(i, Notice) and i.event == "render_rate"]


def test_at_half_rate_a_turns_first_frame_is_not_held_for_the_next(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock)
    stream(session, clock, speech, 4.0, lambda n: 1.5 / FPS)
    assert session.chain.half_rate
    clock.advance(1.0)
    pcm = np.round(np.clip(speech, -1, 1) * 32767).astype(np.int16)
    step = int(CHUNK_S * SAMPLE_RATE)
    needed = round((1 / FPS + session.lookahead_s) / CHUNK_S)  # chunks that bring frame 0's span and look-ahead
    for n in range(needed):
        frames = [i for i in session.poll() if isinstance(i, Frame)]
        assert frames == []  # nothing before its audio is in
        session.push_audio(pcm[n * step : (n + 1) * step], SAMPLE_RATE, arrived_s=clock.now())
        clock.advance(CHUNK_S)
    first = [i for i in session.poll() if isinstance(i, Frame)]
    assert len(first) == 1 and not first[0].interpolated and first[0].turn_arrived_s is not None
