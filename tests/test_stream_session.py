"""The server's session shell over the core: one audio clock, progressive frames, idle frames,
dropping, fallback, encoding, echoed audio."""

import av
import numpy as np
import pytest

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.errors import BadAudioError, NotSupportedError
from lipstream.motion.streaming import StreamingDriver
from lipstream.audio.resampler import StreamResampler
from lipstream.session import ManualClock
from lipstream.stream.audio_in import AudioFormat
from lipstream.stream.events import Dropped, FrameOut, Status
from lipstream.session.render_chain import MAX_MISSES
from lipstream.stream.session import SessionConfig, SessionPipeline

from test_stream_driver import LevelDriver


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def frames(events):
    return [e for e in events if isinstance(e, FrameOut)]


def test_an_hour_of_44k_chunks_ends_in_sync():
    """1 h of 44.1 kHz audio in chunks of 10 ms to 1 s, faster than real time: a 40 ms click each
    minute must land on the same frame offset at the end as at the start (within one frame)."""
    rate, fps, hour_s = 44100, 25.0, 3600
    clicks_s = np.arange(30, hour_s, 60.0)
    click = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(int(0.04 * rate)) / rate) * 32767).astype("<i2")
    starts = np.round(clicks_s * rate).astype(int)
    resampler = StreamResampler()
    streaming = StreamingDriver(LevelDriver(fps), fps, block_s=1.0, context_s=0.1, guard_s=0.0)
    fmt = AudioFormat(rate, 1, "pcm16")
    rng = np.random.default_rng(7)
    rows, position = [], 0
    while position < hour_s * rate:
        n = min(int(rng.uniform(0.01, 1.0) * rate), hour_s * rate - position)
        chunk = np.zeros(n, "<i2")
        for s in starts[(starts + len(click) > position) & (starts < position + n)]:
            lo, hi = max(s, position), min(s + len(click), position + n)
            chunk[lo - position : hi - position] = click[lo - s : hi - s]
        rows.append(streaming.push(resampler.push(fmt.samples(chunk.tobytes()), rate)))
        position += n
    rows.append(streaming.push(resampler.flush()))
    rows.append(streaming.flush())
    level = np.vstack(rows)[:, 0]
    assert streaming.received == round(hour_s * SAMPLE_RATE)  # not one sample lost or made up
    assert len(level) == FrameClock(fps).frame_count(hour_s * SAMPLE_RATE)
    clock = FrameClock(fps)
    offsets_ms = []
    for t in clicks_s:
        k0 = int(t * fps)
        k = k0 - 5 + int(np.argmax(level[k0 - 5 : k0 + 6]))
        offsets_ms.append(clock.frame_time_s(k) * 1000 - t * 1000)
    assert max(offsets_ms) - min(offsets_ms) <= 1000 / fps
    assert abs(offsets_ms[-1]) <= 1000 / fps


def test_resampler_handles_any_rate_and_layout():
    rng = np.random.default_rng(1)
    for fmt in (AudioFormat(48000, 2, "f32"), AudioFormat(8000, 1, "pcm16"), AudioFormat(22050, 6, "pcm16")):
        r, total, n_in = StreamResampler(), 0, 0
        for _ in range(40):
            n = int(rng.integers(1, fmt.sample_rate // 5))
            dtype = "<f4" if fmt.encoding == "f32" else "<i2"
            data = (rng.uniform(-0.1, 0.1, n * fmt.channels) * (1 if fmt.encoding == "f32" else 32767)).astype(dtype)
            total += len(r.push(fmt.samples(data.tobytes()), fmt.sample_rate))
            n_in += n
        total += len(r.flush())
        assert abs(total - n_in * SAMPLE_RATE / fmt.sample_rate) <= 1
    with pytest.raises(BadAudioError, match="whole number"):
        AudioFormat(16000, 1, "pcm16").samples(b"\x00\x01\x02")
    with pytest.raises(BadAudioError, match="NaN"):
        AudioFormat(16000, 1, "f32").samples(np.array([np.nan], "<f4").tobytes())
    with pytest.raises(BadAudioError, match="too long"):
        AudioFormat(16000, 1, "pcm16").samples(bytes(2 * 17000))


def test_frames_carry_the_audio_clock(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128), default_avatar, clock=now)
    audio = speech[: 3 * SAMPLE_RATE]
    # 48 kHz stereo chunks of uneven size, as a browser might send them
    stereo = np.repeat(np.interp(np.arange(3 * 48000) / 3, np.arange(len(audio)), audio)[:, None], 2, axis=1)
    fmt = AudioFormat(48000, 2, "f32")
    events, i = [], 0
    for n in [480, 4800, 960, 48000, 2400] * 10:
        chunk = stereo[i : i + n]
        if not len(chunk):
            break
        events += pipeline.audio(chunk.astype("<f4").tobytes(), fmt, now.now())
        i += n
        now.t += n / 48000
    events += pipeline.flush()
    made = frames(events)
    clock = FrameClock(25)
    assert [f.index for f in made] == list(range(75))
    assert all(f.pts == clock.frame_start(f.index) and not f.idle for f in made)
    assert sum(f.span for f in made) == pipeline.session.driver.received == 3 * SAMPLE_RATE
    first = made[0].data
    assert first[:3] == b"\xff\xd8\xff"
    statuses = [e.event for e in events if isinstance(e, Status)]
    assert statuses == ["turn_started", "turn_ended"]


def test_a_frame_goes_out_as_soon_as_its_lookahead_is_in(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128), default_avatar, clock=now)
    pipeline.session.driver.max_cpu_share = None  # progressive whatever the driver costs on this machine
    step = SAMPLE_RATE // 100  # 10 ms chunks
    for i in range(0, 2 * SAMPLE_RATE, step):
        out = frames(pipeline.audio(pcm16(speech[i : i + step]), AudioFormat(), now.now()))
        received = i + step
        for f in out:  # made by the chunk that completed its look-ahead, not later
            assert pipeline.session.driver.needed_sample(f.index) <= received < pipeline.session.driver.needed_sample(f.index) + step
        now.t += 0.01


def test_idle_frames_between_turns_at_the_frame_rate(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="low", width=128), default_avatar, clock=now)
    pipeline.audio(pcm16(speech[:8000]), AudioFormat(), now.now())
    assert pipeline.tick() == []  # the turn is still on
    now.t += 0.5 + 0.25 + 0.01  # the chunk's length plus the grace: the turn ends by itself
    ended = pipeline.tick()
    assert [e.event for e in ended if isinstance(e, Status)] == ["turn_ended"]
    made = []
    for _ in range(25):  # one second, polled at 100 Hz
        for _ in range(4):
            now.t += 0.01
            made += frames(pipeline.tick())
    assert 24 <= len(made) <= 26
    # the turn ended by a pause: the clock stays where the audio stopped, inside frame 12
    assert all(f.idle and f.pts == 8000 and f.span == 0 for f in made)
    now.t += 1.0  # a busy second: only the latest due idle frame is made, not a backlog
    assert len(frames(pipeline.tick())) == 1
    again = pipeline.audio(pcm16(speech[8000:24000]), AudioFormat(), now.now())
    assert [e.detail["audioMs"] for e in again if isinstance(e, Status)] == [500.0]


def test_no_idle_frames_when_turned_off(default_avatar):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128, idle_frames=False), default_avatar, clock=now)
    events = pipeline.audio(bytes(2 * SAMPLE_RATE), AudioFormat(), now.now()) + pipeline.flush()
    assert frames(events) == []
    assert sum(e.count for e in events if isinstance(e, Dropped) and e.reason == "silent") == 25
    now.t += 2.0
    assert pipeline.tick() == [] and pipeline.next_wakeup() is None


def test_late_frames_are_dropped_and_repeated_misses_fall_back(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128), default_avatar, clock=now)
    for i in range(0, 2 * SAMPLE_RATE, 8000):  # chunks queued up while the machine was busy ...
        pipeline.add_audio(pcm16(speech[i : i + 8000]), AudioFormat(), now.now())
    now.t += 5.0  # the machine stalled: every ready frame is now past its deadline
    events = pipeline.process()
    late = sum(e.count for e in events if isinstance(e, Dropped) and e.reason == "late")
    # the stall also ended the turn: frames held back by the look-ahead are made then, on time
    made = frames(events)
    assert late >= MAX_MISSES and late + len(made) == 50 and {f.renderer for f in made} == {"static"}
    assert pipeline.session.chain.name == "static"
    changes = [(c.from_renderer, c.to_renderer, c.reason) for c in pipeline.session.chain.changes]
    assert changes == [("warp", "static", "deadline")]


def test_a_failing_renderer_falls_back_without_losing_the_frame(default_avatar, speech, monkeypatch):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128), default_avatar, clock=now)

    def broken(k, params):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipeline.session.chain.renderer, "render_frame", broken)
    events = pipeline.audio(pcm16(speech[: SAMPLE_RATE]), AudioFormat(), now.now()) + pipeline.flush()
    assert len(frames(events)) == 25 and {f.renderer for f in frames(events)} == {"static"}
    fallback = [e for e in events if isinstance(e, Status) and e.event == "fallback"]
    assert len(fallback) == 1 and fallback[0].detail["reason"] == "error"
    assert "out of memory" in fallback[0].detail["detail"]


def test_switching_renderer_and_driver_mid_session(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128), default_avatar, clock=now)
    before = frames(pipeline.audio(pcm16(speech[: SAMPLE_RATE]), AudioFormat(), now.now()))
    switched = pipeline.switch(renderer="static", driver="viseme")
    assert switched[0].detail == {"renderer": "static", "driver": "viseme"}
    second = pcm16(speech[SAMPLE_RATE : 2 * SAMPLE_RATE])
    after = frames(pipeline.audio(second, AudioFormat(), now.now()) + pipeline.flush())
    assert {f.renderer for f in before} == {"warp"} and {f.renderer for f in after} == {"static"}
    assert [f.index for f in before + after] == list(range(50))
    with pytest.raises(NotSupportedError):
        pipeline.switch(renderer="bank")  # a photo has no mouth bank
    assert pipeline.session.chain.name == "static"


def test_h264_frames_decode_with_the_clock_as_pts(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", format="h264", width=128), default_avatar, clock=now)
    made = frames(pipeline.audio(pcm16(speech[: SAMPLE_RATE]), AudioFormat(), now.now()) + pipeline.flush())
    assert made[0].keyframe
    codec = av.CodecContext.create("h264", "r")
    decoded = []
    for f in made:  # each frame is one access unit
        decoded += codec.decode(av.Packet(f.data))
    decoded += codec.decode(None)
    assert len(decoded) == len(made) == 25
    assert (decoded[0].width, decoded[0].height) == (128, 128)


@pytest.mark.parametrize("width,height", [(100, 300), (8, None), (5000, None)])
def test_sizes_that_cannot_be_made(default_avatar, width, height):
    with pytest.raises(NotSupportedError):
        SessionPipeline(SessionConfig(width=width, height=height), default_avatar)


def test_returned_audio_is_the_clock(default_avatar, speech):
    now = ManualClock()
    pipeline = SessionPipeline(SessionConfig(preset="ultra_low", width=128, return_audio=True), default_avatar, clock=now)
    echoed = []
    for i in range(0, SAMPLE_RATE, 4000):
        echoed += [e for e in pipeline.audio(pcm16(speech[i : i + 4000]), AudioFormat(), now.now()) if hasattr(e, "pcm16")]
    assert [e.pts for e in echoed] == list(range(0, SAMPLE_RATE, 4000))
    back = np.frombuffer(b"".join(e.pcm16 for e in echoed), "<i2")
    assert len(back) == SAMPLE_RATE and np.abs(back / 32767 - speech[:SAMPLE_RATE]).max() < 1e-3
