"""Adaptive quality on a fake clock: a simulated link drains the socket at a set rate; the
controller steps quality, size and frame rate down until what is sent fits, and back up (with
hysteresis) when the link recovers."""

import numpy as np
import pytest

from lipstream.server.adaptive import AdaptiveQuality, ladder
from lipstream.server.connection import MAX_QUEUE_DELAY_S
from lipstream.session import ManualClock
from lipstream.stream.encode import FrameThinner, JpegEncoder, OutputLevel

FPS = 25.0
# JPEG bytes of a 256 px frame of the bundled avatar per (quality, scale), measured with cv2.imencode
# (huffman optimised below the preset's quality); the test needs only their order of magnitude.
FRAME_BYTES = {(80, 1.0): 11000, (60, 1.0): 7300, (40, 1.0): 5700, (30, 1.0): 4800, (30, 0.75): 3200,
               (30, 0.5): 1900, (20, 0.5): 1550}


class Link:
    """A socket whose client takes `rate` bytes a second: what is written waits until taken."""

    def __init__(self, rate: float):
        self.rate, self.written, self.delivered = rate, 0, 0.0

    def write(self, n: int) -> None:
        self.written += n

    def run(self, seconds: float) -> None:
        self.delivered = min(self.written, self.delivered + self.rate * seconds)

    @property
    def queued(self) -> int:
        return self.written - int(self.delivered)


def simulate(controller, link, clock, seconds, thinner):
    """Frames at FPS for `seconds`, each at the controller's level, as the server's send loop
    does (a frame is not written while the socket holds over MAX_QUEUE_DELAY_S: it is dropped);
    returns when each frame written was taken by the client, the frames dropped and the levels."""
    ends, taken_at, levels, dropped = [], [], [], 0
    for _ in range(int(seconds * FPS)):
        level = controller.level
        thinner.set_fps(level.fps)
        if thinner.keep():
            if controller.delay_s > MAX_QUEUE_DELAY_S:
                dropped += 1
            else:
                link.write(FRAME_BYTES[(level.jpeg_quality, level.scale)])
                controller.frame_sent(link.written)
                ends.append(link.written)
        clock.advance(1 / FPS)
        link.run(1 / FPS)
        while ends and ends[0] <= link.delivered:
            taken_at.append(clock.now())
            ends.pop(0)
        controller.update(int(link.delivered), link.queued)
        levels.append(controller.index)
    return taken_at, dropped, levels


def setup(rate):
    clock = ManualClock()
    controller = AdaptiveQuality(ladder("jpeg", 80, FPS), clock.now)
    return clock, controller, Link(rate), FrameThinner(FPS)


def test_the_ladder_steps_quality_then_size_then_frame_rate():
    levels = ladder("jpeg", 80, FPS)
    assert levels[0] == OutputLevel(80, 1.0, FPS)
    qualities = [lv.jpeg_quality for lv in levels]
    first_small = next(i for i, lv in enumerate(levels) if lv.scale < 1)
    first_slow = next(i for i, lv in enumerate(levels) if lv.fps < FPS)
    assert qualities[:first_small] == sorted(qualities[:first_small], reverse=True)
    assert 0 < first_small < first_slow
    assert [lv.fps for lv in levels[first_slow:]][:2] == [20.0, 15.0] and min(lv.fps for lv in levels) == 15.0
    assert all(lv.jpeg_quality is None and lv.scale == 1.0 for lv in ladder("h264", 80, FPS))


def test_a_300_kbit_link_gets_15_fps_or_more_without_a_backlog():
    clock, controller, link, thinner = setup(300_000 / 8)
    taken, dropped, levels = simulate(controller, link, clock, 60.0, thinner)
    assert controller.steps["down"] >= 6  # quality, size and frame rate all stepped
    assert all(controller.levels[i].fps >= 15.0 for i in levels)
    # the client took at least 15 frames in every second after the first few
    per_second = np.bincount([int(t - taken[0]) for t in taken])
    assert per_second[5:-1].min() >= 15
    assert dropped < 2 * FPS  # frames dropped (while stepping down) only at first
    assert max(levels) > 5 and controller.delay_s <= MAX_QUEUE_DELAY_S


def test_a_link_that_recovers_gets_the_full_quality_back():
    clock, controller, link, thinner = setup(300_000 / 8)
    simulate(controller, link, clock, 20.0, thinner)
    assert controller.index >= 6
    link.rate = 10e6 / 8
    _, _, levels = simulate(controller, link, clock, 60.0, thinner)
    assert controller.index == 0 and controller.steps["up"] >= 7
    assert levels == sorted(levels, reverse=True)  # straight back up, one hold at a time


def test_a_burst_on_a_fast_link_is_not_congestion():
    clock, controller, link, _ = setup(10e6 / 8)
    for second in range(10):
        for k in range(int(FPS)):
            link.write(11000 * (10 if k == 0 and second % 3 == 0 else 1))  # a flush's frames at once, now and then
            controller.frame_sent(link.written)
            clock.advance(1 / FPS)
            link.run(1 / FPS)
            controller.update(int(link.delivered), link.queued)
    assert controller.index == 0 and controller.steps["down"] == 0


def test_a_client_that_takes_nothing_is_stepped_to_the_floor():
    clock, controller, link, thinner = setup(0.0)
    simulate(controller, link, clock, 10.0, thinner)
    assert controller.index == len(controller.levels) - 1


def test_thinning_keeps_frames_evenly():
    thinner = FrameThinner(25.0)
    thinner.set_fps(15.0)
    kept = [thinner.keep() for _ in range(25)]
    assert sum(kept) == 15
    assert max(len(run) for run in "".join("x" if k else "." for k in kept).split("x")) == 1  # never two in a row left out


def test_the_jpeg_encoder_steps_quality_and_size():
    rng = np.random.default_rng(0)
    image = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    encoder = JpegEncoder(80)
    full, _ = encoder.encode(image, 0)
    encoder.set_level(OutputLevel(30, 0.5, 15.0))
    small, _ = encoder.encode(image, 0)
    import cv2

    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape == (128, 128, 3)
    assert len(small) < len(full) / 3


@pytest.mark.parametrize("fmt", ["jpeg", "h264"])
def test_every_ladder_ends_at_15_fps(fmt):
    assert ladder(fmt, 70, 25.0)[-1].fps == 15.0


def test_a_burst_after_a_quiet_spell_is_not_congestion():
    """A turn's frames at once after a pause (a flush, or a 1 s chunk): the quiet time says nothing
    of the link, so the burst is measured against what the link carried while busy."""
    clock, controller, link, _ = setup(3e6 / 8)
    for _ in range(5):
        for _ in range(50):  # a quiet second, read every 20 ms
            clock.advance(0.02)
            link.run(0.02)
            controller.update(int(link.delivered), link.queued)
        link.write(10 * 11000)  # a flush's frames at once: 0.29 s for this link to carry
        controller.frame_sent(link.written)
        for _ in range(50):
            clock.advance(0.02)
            link.run(0.02)
            controller.update(int(link.delivered), link.queued)
    rate, _ = controller.drain_rate()
    assert abs(rate - 3e6 / 8) < 0.05 * 3e6 / 8  # what the link carries, not what was sent on average
    assert controller.steps["down"] == 0
