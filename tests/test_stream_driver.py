"""StreamingDriver: the offline drivers on a live stream, frame by frame on the one clock."""

import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.motion.drivers import get_driver
from lipstream.motion.params import MouthTrack
from lipstream.motion.streaming import StreamingDriver


class LevelDriver:
    """A stand-in driver: jaw_open of frame k = RMS of frame k's own samples (no look-ahead)."""

    name = "level"
    lookahead_ms = 0.0

    def __init__(self, fps: float):
        self.clock = FrameClock(fps)

    def drive(self, audio, speech=None, features=None):
        n = self.clock.frame_count(len(audio))
        bounds = np.minimum([self.clock.frame_start(k) for k in range(n + 1)], len(audio))
        rows = np.zeros((n, 4), np.float32)
        if n:
            power = np.add.reduceat(np.append(audio.astype(np.float64) ** 2, 0.0), bounds[:-1])
            rows[:, 0] = np.sqrt(power / np.maximum(np.diff(bounds), 1))
        return MouthTrack(rows, self.clock.fps)


def _chunks(audio, rng, low_s=0.01, high_s=1.0):
    i = 0
    while i < len(audio):
        n = int(rng.uniform(low_s, high_s) * SAMPLE_RATE)
        yield audio[i : i + n]
        i += n


def test_rows_come_out_once_each_as_soon_as_ready(speech):
    fps = 25.0
    driver = get_driver("energy", fps)
    streaming = StreamingDriver(driver, fps, block_s=0.0, context_s=0.3, guard_s=0.0)
    rng = np.random.default_rng(1)
    total = 0
    for chunk in _chunks(speech[: 4 * SAMPLE_RATE], rng, 0.01, 0.2):
        rows = streaming.push(chunk)
        total += len(rows)
        # progressive: every frame whose audio and look-ahead are in has been emitted, no more
        ready = sum(streaming.needed_sample(k) <= streaming.received for k in range(streaming.next_frame + 2))
        assert streaming.next_frame == ready == total
    total += len(streaming.flush())
    assert total == FrameClock(fps).frame_count(4 * SAMPLE_RATE)


def test_streaming_follows_the_offline_track(speech):
    fps = 25.0
    offline = get_driver("energy", fps).drive(speech).values
    streaming = StreamingDriver(get_driver("energy", fps), fps, block_s=0.0, context_s=0.3, guard_s=0.0)
    rows = [streaming.push(c) for c in _chunks(speech, np.random.default_rng(2), 0.01, 0.1)] + [streaming.flush()]
    live = np.vstack(rows)
    assert live.shape == offline.shape
    assert np.corrcoef(live[:, 0], offline[:, 0])[0, 1] > 0.85


def test_frames_stay_on_the_clock_at_fractional_fps():
    fps = 30000 / 1001
    rng = np.random.default_rng(3)
    audio = rng.uniform(-0.5, 0.5, 20 * SAMPLE_RATE).astype(np.float32)
    streaming = StreamingDriver(LevelDriver(fps), fps, block_s=0.0, context_s=0.1, guard_s=0.0)
    rows = np.vstack([streaming.push(c) for c in _chunks(audio, rng)] + [streaming.flush()])
    expected = LevelDriver(fps).drive(audio).values
    assert len(rows) == FrameClock(fps).frame_count(len(audio))
    # Each window's frame grid starts on a global frame boundary; at fractional rates its later
    # boundaries can round one sample differently (62 us), never more, so values agree closely.
    np.testing.assert_allclose(rows[:, 0], expected[:, 0], rtol=5e-3)


def test_switching_driver_keeps_the_clock(speech):
    streaming = StreamingDriver(get_driver("energy", 25), 25, block_s=0.0, context_s=0.3, guard_s=0.0)
    first = streaming.push(speech[: 2 * SAMPLE_RATE])
    streaming.set_driver(get_driver("viseme", 25))
    rest = np.vstack([streaming.push(speech[2 * SAMPLE_RATE : 3 * SAMPLE_RATE]), streaming.flush()])
    assert len(first) + len(rest) == 75 and streaming.next_frame == 75


def test_the_cpu_cap_waits_between_runs_but_not_for_a_new_turns_first_frame(speech):
    fps, now = 25.0, [0.0]

    class SlowDriver(LevelDriver):
        def drive(self, audio, speech=None, features=None):
            now[0] += 0.05  # every run costs 50 ms: at a 25% cap, wait for 200 ms of audio after it
            return super().drive(audio)

    streaming = StreamingDriver(SlowDriver(fps), fps, block_s=0.0, context_s=0.1, guard_s=0.0,
                                lookahead_s=0.06, max_cpu_share=0.25, now=lambda: now[0])
    chunk = 320  # 20 ms
    made = [len(streaming.push(speech[i : i + chunk])) for i in range(0, SAMPLE_RATE, chunk)]
    runs = [i for i, n in enumerate(made) if n]
    assert runs[0] == 4 and all(b - a >= 10 for a, b in zip(runs, runs[1:]))  # 200 ms between runs
    streaming.flush()
    first = next(i for i in range(50) if len(streaming.push(speech[i * chunk : (i + 1) * chunk])))
    assert first == 4  # 100 ms in (its 40 ms + 60 ms of look-ahead): no wait for the cap
