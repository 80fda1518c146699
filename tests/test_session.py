"""The push session core: push / flush / interrupt / end, idle frames, pts and exact audio, on a
manual clock; the sync and async iterators."""

import asyncio
import threading
from fractions import Fraction

import numpy as np
import pytest

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.errors import BadAudioError, NotSupportedError
from lipstream.session import Frame, ManualClock, Notice, Session

FPS = 25


def frames(items):
    return [i for i in items if isinstance(i, Frame)]


def notices(items, event=None):
    return [i for i in items if isinstance(i, Notice) and (event is None or i.event == event)]


def pcm16(samples: np.ndarray) -> np.ndarray:
    return np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)


@pytest.fixture
def voice24k(speech):
    """1.5 s of the test speech at 24 kHz stereo int16 (left: speech, right: half of it)."""
    mono = np.interp(np.arange(int(1.5 * 24000)) * SAMPLE_RATE / 24000, np.arange(len(speech)), speech)
    return pcm16(np.stack([mono, 0.5 * mono], axis=1))


def live(avatar, clock, **options):
    options = {"preset": "ultra_low", "size": (64, None), "clock": clock, "profiles": [], **options}
    return Session(avatar, **options)


def test_frames_carry_their_exact_audio_and_pts(default_avatar, voice24k):
    clock = ManualClock()
    session = live(default_avatar, clock)
    pts, made = [], []
    for i in range(0, len(voice24k), 480):  # 20 ms chunks at 24 kHz, in real time
        pts.append(session.push_audio(voice24k[i : i + 480], 24000))
        made += frames(session.poll())
        clock.advance(0.02)
    session.flush()
    items = session.poll()
    made += frames(items)
    assert pts[:3] == [0, 320, 640]  # each chunk's first sample on the 1/16000 clock
    n = FrameClock(FPS, 24000).frame_count(len(voice24k))
    assert [f.index for f in made] == list(range(n)) and not any(f.idle for f in made)
    assert all(f.pts == FrameClock(FPS).frame_start(f.index) and f.time_base == Fraction(1, 16000) for f in made)
    assert made[1].time_s == 0.04 and all(f.sample_rate == 24000 and f.channels == 2 for f in made)
    assert all(len(f.audio) == 960 for f in made[:-1])  # 40 ms at 24 kHz
    back = np.concatenate([f.audio for f in made])
    assert back.dtype == np.int16 and np.array_equal(back, voice24k)  # not one sample changed, lost or added
    assert all(f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8 for f in made)
    assert {f.renderer for f in made} == {"warp"}
    assert [n.event for n in notices(items)][-1] == "turn_ended"


def test_a_frame_waits_for_its_lookahead_and_no_longer(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock, lookahead=0.1)
    session.driver.max_cpu_share = None  # progressive whatever the driver costs on this machine
    assert session.lookahead_s == 0.1
    step = 160  # 10 ms
    for i in range(0, SAMPLE_RATE, step):
        session.push_audio(pcm16(speech[i : i + step]), SAMPLE_RATE)
        for f in frames(session.poll()):
            needed = FrameClock(FPS).frame_start(f.index + 1) + 1600
            assert needed <= i + step < needed + step
        clock.advance(0.01)


def test_flush_makes_the_partial_last_frame_and_the_next_turn_starts_on_a_boundary(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock, idle_frames=False)
    session.push_audio(pcm16(speech[:1000]), SAMPLE_RATE)  # 1.5625 frames
    session.flush()
    first = frames(session.poll())
    assert [f.index for f in first] == [0, 1] and [len(f.audio) for f in first] == [640, 360]
    pts = session.push_audio(pcm16(speech[1000:2000]), SAMPLE_RATE)
    assert pts == 1280  # frame 2's start: the turn's audio is never shown by an earlier frame
    session.flush()
    second = frames(session.poll())
    assert [f.index for f in second] == [2, 3] and second[0].pts == 1280
    assert np.array_equal(np.concatenate([f.audio for f in first + second])[:, 0], pcm16(speech[:2000]))


def test_a_pause_ends_a_turn_softly_and_the_clock_goes_on_without_a_gap(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock, idle_frames=False)
    session.push_audio(pcm16(speech[:1000]), SAMPLE_RATE)  # 1.5625 frames, then the source stalls
    clock.advance(1000 / SAMPLE_RATE + 0.25 + 0.01)
    first = session.poll()
    assert notices(first, "turn_ended") and [len(f.audio) for f in frames(first)] == [640, 360]
    assert session.push_audio(pcm16(speech[1000:2000]), SAMPLE_RATE) == 1000  # no gap on the clock
    session.flush()
    second = frames(session.poll())
    assert [f.index for f in second] == [2, 3] and second[0].pts == 1280
    assert [len(f.audio) for f in second] == [280 + 640, 80]  # frame 2 also carries frame 1's late part
    assert np.array_equal(np.concatenate([f.audio for f in frames(first) + second])[:, 0], pcm16(speech[:2000]))


def test_idle_frames_are_paced_by_the_clock_and_stop_for_audio(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock)
    assert session.poll() == []
    made = []
    for _ in range(100):  # one second polled at 100 Hz
        clock.advance(0.01)
        made += frames(session.poll())
    assert 24 <= len(made) <= 26 and all(f.idle and f.span == 0 and len(f.audio) == 0 for f in made)
    clock.advance(1.0)  # a busy second: only the latest due idle frame, not a backlog
    assert len(frames(session.poll())) == 1
    session.push_audio(pcm16(speech[:SAMPLE_RATE]), SAMPLE_RATE)
    clock.advance(0.1)
    assert not any(f.idle for f in frames(session.poll()))  # no idle frames during a turn
    clock.advance(1.0 + 0.25)  # no more audio: the turn ends by itself, then idle again
    items = session.poll()
    assert notices(items, "turn_ended") and all(not f.idle for f in frames(items))
    clock.advance(0.05)
    assert all(f.idle for f in frames(session.poll()))


def test_interrupt_drops_what_is_queued_and_goes_idle(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock, idle_frames=False)
    session.push_audio(pcm16(speech[: SAMPLE_RATE]), SAMPLE_RATE)
    clock.advance(0.1)
    before = frames(session.poll())
    session.interrupt()
    items = session.poll()
    assert frames(items) == [] and [n.event for n in notices(items)] == ["interrupted"]
    clock.advance(2.0)
    assert frames(session.poll()) == []  # the interrupted turn's frames never come
    pts = session.push_audio(pcm16(speech[:640]), SAMPLE_RATE)
    session.flush()
    after = frames(session.poll())
    assert pts == FrameClock(FPS).frame_start(25)  # the clock moved on past the dropped audio
    assert after[0].index == 25 > before[-1].index


def test_bytes_are_raw_pcm16_and_a_format_change_starts_a_new_turn(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock, idle_frames=False)
    session.push_audio(pcm16(speech[:800]).tobytes(), SAMPLE_RATE)
    stereo = np.repeat(pcm16(speech[800:1600])[:, None], 2, axis=1)
    session.push_audio(stereo.tobytes(), SAMPLE_RATE, channels=2)
    session.flush()
    items = session.poll()
    assert [n.event for n in notices(items)] == ["turn_started", "turn_ended", "turn_started", "turn_ended"]
    made = frames(items)
    assert [f.channels for f in made] == [1, 1, 2, 2]
    with pytest.raises(BadAudioError, match="raw PCM16"):
        session.push_audio(b"\x00\x01\x02", SAMPLE_RATE)
    with pytest.raises(BadAudioError, match="sample_rate"):
        session.push_audio(np.zeros(10, np.float32))
    with pytest.raises(BadAudioError, match="float32 or int16"):
        session.push_audio(np.zeros(10, np.int32), SAMPLE_RATE)


def test_late_frames_repeat_or_drop(default_avatar, speech):
    clock = ManualClock()
    repeat = live(default_avatar, clock, idle_frames=False)
    drop = live(default_avatar, clock, idle_frames=False, drop_late=True)
    for session in (repeat, drop):
        session.push_audio(pcm16(speech[:4000]), SAMPLE_RATE)
        frames(session.poll())  # the first frame is made on time
    clock.advance(5.0)  # then the machine stalls past every deadline
    for session in (repeat, drop):
        session.push_audio(pcm16(speech[4000 : 2 * SAMPLE_RATE]), SAMPLE_RATE, arrived_s=clock.now() - 4.9)
    kept, dropped = repeat.poll(), drop.poll()
    late = notices(kept, "dropped")
    assert late and late[0].detail["reason"] == "repeated"
    assert notices(dropped, "dropped")[0].detail["reason"] == "late"
    assert len(frames(kept)) > len(frames(dropped))  # repeated frames still carry their audio


def test_offline_session_drives_the_whole_turn_and_refuses_silence(default_avatar, speech):
    session = Session(default_avatar, live=False, size=(64, None), driver="energy", refuse_silence=True)
    session.push_audio(pcm16(speech[: 2 * SAMPLE_RATE]), SAMPLE_RATE)
    session.end()
    made = list(session)
    assert [f.index for f in made] == list(range(50)) and session.driver.next_frame == 50
    with pytest.raises(NotSupportedError, match="ended"):
        session.push_audio(pcm16(speech[:100]), SAMPLE_RATE)
    silent = Session(default_avatar, live=False, size=(64, None), driver="energy", refuse_silence=True)
    silent.push_audio(np.zeros(SAMPLE_RATE, np.int16), SAMPLE_RATE)
    with pytest.raises(BadAudioError, match="silent"):
        silent.end()


def test_sync_iterator_serves_a_pushing_thread(default_avatar, speech):
    session = Session(default_avatar, preset="ultra_low", size=(64, None), idle_frames=False, deadlines=False,
                      profiles=[])
    chunks = [pcm16(speech[i : i + 1600]) for i in range(0, SAMPLE_RATE, 1600)]

    def push():
        for chunk in chunks:
            session.push_audio(chunk, SAMPLE_RATE)
        session.end()

    pusher = threading.Thread(target=push)
    pusher.start()
    made = list(session)  # ends after end() once every frame is out
    pusher.join()
    assert [f.index for f in made] == list(range(25))


def test_async_iterator_and_close(default_avatar, speech):
    session = Session(default_avatar, preset="ultra_low", size=(64, None), idle_frames=False, deadlines=False,
                      profiles=[])

    async def main():
        async def push():
            for i in range(0, SAMPLE_RATE, 3200):
                session.push_audio(pcm16(speech[i : i + 3200]), SAMPLE_RATE)
                await asyncio.sleep(0)
            session.flush()

        task = asyncio.create_task(push())
        got = []
        async for frame in session:
            got.append(frame)
            if len(got) == 25:
                session.close()
        await task
        return got

    got = asyncio.run(asyncio.wait_for(main(), 60))
    assert [f.index for f in got] == list(range(25))


def test_events_hand_out_the_notices_between_the_frames(default_avatar, speech):
    session = Session(default_avatar, preset="ultra_low", size=(64, None), idle_frames=False, deadlines=False,
                      profiles=[])

    async def main():
        session.push_audio(pcm16(speech[:8000]), SAMPLE_RATE)
        session.end()
        return [item async for item in session.events()]

    items = asyncio.run(asyncio.wait_for(main(), 60))
    kinds = [i.event if isinstance(i, Notice) else "frame" for i in items]
    assert kinds[0] == "turn_started" and kinds[-1] == "turn_ended"
    assert kinds[1:-1] == ["frame"] * FrameClock(FPS).frame_count(8000)


def test_each_turns_first_frame_carries_when_its_audio_arrived(default_avatar, speech):
    clock = ManualClock()
    session = live(default_avatar, clock, lookahead=0.06)
    session.driver.max_cpu_share = None
    made = []
    for turn in range(2):
        first_s = clock.now()
        for i in range(0, SAMPLE_RATE // 2, 320):  # 20 ms chunks, 0.5 s per turn
            session.push_audio(pcm16(speech[i : i + 320]), SAMPLE_RATE)
            made += [(f, first_s) for f in frames(session.poll()) if not f.idle]
            clock.advance(0.02)
        session.flush()
        made += [(f, first_s) for f in frames(session.poll()) if not f.idle]
        clock.advance(1.0)
    marked = [(f.index, f.turn_arrived_s, first_s) for f, first_s in made if f.turn_arrived_s is not None]
    assert len(marked) == 2 and all(arrived == first_s for _, arrived, first_s in marked)
    turn_starts = [made[0][0].index, next(f.index for f, s in made if s != made[0][1])]
    assert [k for k, _, _ in marked] == turn_starts
    # with 60 ms of look-ahead the first frame of a turn is ready once 100 ms of audio are in
    assert next(f.ready_s for f, _ in made if f.turn_arrived_s is not None) == pytest.approx(made[0][1] + 0.08)


def test_a_live_poll_renders_only_the_frames_it_hands_out(default_avatar, speech):
    """Frames of a long ready block are rendered as they are read: the first goes out after one
    render, not after the whole block (what a listener waits for at the start of a reply)."""
    clock = ManualClock()
    session = live(default_avatar, clock, idle_frames=False)
    drawn = []
    renderer = session.chain.renderer
    original = renderer.render_frame
    renderer.render_frame = lambda k, params: drawn.append(k) or original(k, params)
    session.push_audio(pcm16(speech[:SAMPLE_RATE]), SAMPLE_RATE)
    session.flush()
    first = frames(session.poll(limit=1))
    assert len(first) == 1 and len(drawn) == 1
    rest = frames(session.poll())
    assert len(rest) == FrameClock(FPS).frame_count(SAMPLE_RATE) - 1 and len(drawn) == 1 + len(rest)


def test_the_first_frame_comes_with_the_chunk_that_completes_its_look_ahead(default_avatar, voice24k):
    """At 24 kHz the analysis copy lags the input by the resampler's filter (about 1 ms); frame 0
    still goes out with the chunk that brings its 40 ms and the look-ahead, not one later."""
    clock = ManualClock()
    session = live(default_avatar, clock, preset="low", idle_frames=False, lookahead=0.12)
    for n, i in enumerate(range(0, len(voice24k), 480), start=1):  # 20 ms chunks
        session.push_audio(voice24k[i : i + 480], 24000)
        if frames(session.poll()):
            break
        clock.advance(0.02)
    assert n * 20 == 40 + 120
