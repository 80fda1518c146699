"""The push session: the one engine core. Audio in (`push_audio`, `flush`, `interrupt`), frames out.

    session = Session(avatar, fps=25, size=(256, None))
    session.push_audio(pcm16_bytes, sample_rate=24000)      # or an array, any rate and layout
    session.flush()                                         # end of a turn: make the rest
    for frame in session:                                   # or `async for`
        show(frame.image); play(frame.audio)

Offline rendering (push everything, `end()`, iterate), the server's sessions, the Python API and
the framework plugins all run through this class; it alone decides silence, look-ahead,
deadlines, fallback and resizing.

One clock: frame k shows audio ticks [k*16000/fps, (k+1)*16000/fps) of the session's audio, and
carries the exact samples of the pushed audio in that span, at the pushed rate and layout. The
analysis (driver) runs on a 16 kHz mono copy. A turn is the audio between its first push and its
`flush` (end of a reply); its last frame may hold less than a frame's worth of audio, and the
next turn starts on the next frame boundary. Live, a pause in the pushes also ends a turn (its
frames are made, idle frames follow), but softly: if audio in the same format comes back, the
clock goes on where it stopped, with no gap, and the first frame after the pause also carries
the rest of the paused frame's span, so a jittery source never shifts video against audio. No
audio is ever dropped, duplicated or moved.

Live (`live=True`): a frame is made once its audio and the driver's look-ahead are in (or at the
preset's block cadence), with a deadline; when the renderer falls behind its deadlines, every
other frame is rendered and the one between is blended from its neighbours (`interpolated`; it
goes out once the next is rendered), before the renderer chain falls back; between turns, idle frames come at the frame rate,
paced from the clock (start + n / fps, never accumulated sleeps); they belong to no audio and do
not move the clock. Offline (`live=False`): no deadlines, no idle frames, the driver runs once
over each whole turn and the renderer may plan across it, frames are rendered as they are read.
Wall-clock time enters only through `clock` (see lipstream.session.clock).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.audio.pcm import as_samples
from lipstream.audio.resampler import StreamResampler
from lipstream.audio.io import load_audio
from lipstream.avatar.package import AvatarPackage
from lipstream.avatar.resolve import bundled_asset
from lipstream.errors import BadAudioError, NotSupportedError
from lipstream.motion.drivers import DEFAULT_DRIVER, get_driver
from lipstream.motion.streaming import StreamingDriver
from lipstream.select import Profile, machine_profiles
from lipstream.session.arrivals import ArrivalLog
from lipstream.session.clock import Clock, RealClock
from lipstream.session.frames import Frame, Notice
from lipstream.session.presets import DEFAULT_PRESET, Preset, get_preset
from lipstream.session.render_chain import RenderChain
from lipstream.session.size import fit, output_fps, output_size

# A live turn ends by itself when no audio has been pushed for the last chunk's duration plus this.
END_OF_TURN_GRACE_S = 0.25
CLOSED_MOUTH_EPS = 1e-3


class Session:
    """One stream of audio turned into frames of one avatar (see the module docstring).

    fps / size: None = the avatar's; size is (width, height), either may be None to keep the
    aspect ratio. driver / renderer: names (None = the preset's live, the most accurate driver
    and `auto` offline). lookahead: seconds of audio after a frame's span to wait for before
    making it (None = the live preset's `lookahead_ms`, else the driver's own plus the preset's guard). preset: a name or a `Preset`
    (live timing: block, deadline, ...). idle_frames: make idle frames between turns (default:
    live only). deadlines: give live frames deadlines (default: live; off for a consumer that
    reads at its own pace, such as the Python API's stream). drop_late: drop frames past their
    deadline (a server with a frame budget); otherwise a late frame repeats the last image
    (counted as "repeated"), so its audio still goes out. skip_silent: make no frame for
    closed-mouth rows (clients that asked for no idle frames). refuse_silence: a turn with no
    speech at all raises BadAudioError (offline renders). even_size: round the size to even
    numbers (H.264). profiles: measured profiles for renderer "auto" (default: this machine's,
    live). Thread-safe: push from one thread while iterating in another.
    """

    def __init__(self, avatar: AvatarPackage, *, fps: float | None = None,
                 size: tuple[int | None, int | None] | None = None, driver: str | None = None,
                 renderer: str | None = None, lookahead: float | None = None, clock: Clock | None = None,
                 preset: str | Preset | None = None, live: bool = True, idle_frames: bool | None = None,
                 still: bool = False, renderer_options: dict | None = None, profiles: list[Profile] | None = None,
                 deadlines: bool | None = None, drop_late: bool = False, skip_silent: bool = False,
                 refuse_silence: bool = False, even_size: bool = False):
        self.clock = clock or RealClock()
        self.live = live
        self.preset = preset if isinstance(preset, Preset) else get_preset(preset or DEFAULT_PRESET)
        self.fps = output_fps(avatar, fps)
        self.frame_clock = FrameClock(self.fps)
        self.size = output_size(avatar.size, *(size or (None, None)), even=even_size)
        p = self.preset
        self.driver_name = driver or (p.driver if live else DEFAULT_DRIVER)
        if lookahead is not None and not 0 <= lookahead <= 5:
            raise NotSupportedError(f"lookahead {lookahead:g} s is out of range; give 0 to 5 s")
        self.deadlines = live if deadlines is None else deadlines
        # the CPU cap reads the clock: only a session with deadlines trades how often the driver
        # runs for time; one read at its own pace gives the same frames on a busy machine
        timing = (dict(block_s=p.block_ms / 1000, context_s=p.context_ms / 1000, guard_s=p.guard_ms / 1000,
                       max_cpu_share=p.driver_cpu_share if self.deadlines else None)
                  if live else dict(block_s=0.0, guard_s=0.0))
        if lookahead is None and live and p.lookahead_ms is not None:
            lookahead = p.lookahead_ms / 1000
        self.driver = StreamingDriver(get_driver(self.driver_name, self.fps), self.fps, lookahead_s=lookahead,
                                      now=self.clock.now, **timing)
        if profiles is None:
            profiles = machine_profiles() if live else []
        self._chain_args = (renderer or (p.renderer if live else "auto"), profiles, still, renderer_options)
        self.chain = self._new_chain(avatar)
        if live:  # first-call costs (the renderer's buffers, the driver's models) now, not on a turn's first frame
            self.chain.renderer.render_frame(0, np.zeros(4, np.float32))
            self.driver.driver.drive(_warm_up_speech())
        self.idle_frames = live if idle_frames is None else idle_frames
        self.drop_late, self.skip_silent, self.refuse_silence = drop_late, skip_silent, refuse_silence
        self.turns = 0
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._async_wakers: set[Callable[[], None]] = set()
        self._version = 0  # bumped by every call that may give the iterators something new
        self._resampler = StreamResampler()
        self._arrivals = ArrivalLog()
        self._out: deque = deque()  # Frame | Notice | _Block, in order
        self._turn: _Turn | None = None
        self._paused: _Turn | None = None  # a turn ended by a pause, resumed by more audio in its format
        self._due_anchor = (0.0, 0)  # (arrival time, clock tick) frames' due times are counted from
        self._last_push_s = self._last_chunk_s = 0.0
        self._idle_since_s = self.clock.now()
        self._idle_made = 0  # idle frames due since _idle_since_s that were made or skipped
        self._idle_total = 0  # idle frames ever made: they advance the avatar's idle motion
        self._flush_s: float | None = None
        self._changes_seen = 0
        self._rate_changes_seen = 0
        self._between: tuple | None = None  # at half rate: the frame held back until the next is rendered
        self._last_image: np.ndarray | None = None
        self._empty_audio = (SAMPLE_RATE, np.zeros((0, 1), np.float32))
        self._ended = self._closed = False

    # -- what it runs with ----------------------------------------------------------------------

    @property
    def renderer(self) -> str:
        """The renderer in use now (it may change by fallback or `switch`)."""
        return self.chain.name

    @property
    def lookahead_s(self) -> float:
        """Audio (s) after a frame's span that is waited for before making it."""
        return self.driver.lookahead / SAMPLE_RATE

    @property
    def audio_ticks(self) -> int:
        """Length of the session's audio so far on the clock (1/16000 s ticks)."""
        return self.driver.received

    # -- audio in -------------------------------------------------------------------------------

    def push_audio(self, audio, sample_rate: int | None = None, channels: int | None = None, *,
                   arrived_s: float | None = None) -> int:
        """Add audio: raw PCM16 bytes (little-endian, interleaved) or an array (n,) / (n, channels)
        of float in [-1, 1] or int16, at sample_rate (required). Returns the pts (1/16000 s ticks)
        of its first sample. arrived_s: when it arrived on the session clock (default: now).
        A change of rate or layout ends the current turn first. Frames are made by `poll` and
        the iterators, not here."""
        samples = as_samples(audio, sample_rate, channels)
        with self._lock:
            self._check_open()
            now = self.clock.now() if arrived_s is None else arrived_s
            turn = self._turn
            if turn is not None and not turn.takes(samples, sample_rate):
                self._end_turn()
                turn = None
            if not len(samples):
                return turn.pts_of(turn.received) if turn else self.driver.received
            if turn is None:
                turn = self._start_turn(samples, sample_rate, now)

            pts = turn.pts_of(turn.received)
            turn.append(samples)
            self.driver.append(self._resampler.push(samples, sample_rate))
            self._arrivals.add(turn.pts_of(turn.received), now)  # the input's length: the analysis copy lags it
            # a quiet turn ends counting from when the session got the chunk, not when it arrived
            # upstream: a session that fell behind must not end a turn whose audio is still queued
            self._last_push_s, self._last_chunk_s = max(now, self.clock.now()), len(samples) / sample_rate
            self._notify()
            return pts

    def flush(self) -> None:
        """End of a turn: make every remaining frame of the audio pushed so far (then idle)."""
        with self._lock:
            self._check_open()
            self._end_turn()
            self._notify()

    def interrupt(self) -> None:
        """Drop everything not yet handed out (audio and frames) and go idle at once; the clock
        moves on to the next frame boundary, so timestamps keep increasing."""
        with self._lock:
            self._check_open()
            self._out.clear()
            self._paused = self._between = None
            if self._turn is not None:
                self._turn = None
                self._resampler.flush()
                self._arrivals.clear()
            self.driver.skip_to_frame_boundary()
            self._go_idle(self.clock.now())
            self._out.append(Notice("interrupted", {"audioMs": _ms(self.driver.received)}))
            self._notify()

    def end(self) -> None:
        """No more audio: flush, and let the iterators finish after the last frame."""
        with self._lock:
            if not self._closed:
                self._end_turn()
                self._ended = True
                self._notify()

    def close(self) -> None:
        """Stop: drop what is queued; the iterators finish at once."""
        with self._lock:
            self._out.clear()
            self._turn = None
            self._ended = self._closed = True
            self._notify()

    def switch(self, renderer: str | None = None, driver: str | None = None,
               avatar: AvatarPackage | None = None) -> None:
        """Change renderer, driver and/or avatar from the next frame on (NotSupportedError if
        unusable). A new avatar gets a chain of its own (the renderer named, else the one the
        session asked for at its start), built and warmed before it replaces the old one: the
        frames go on on the clock at the session's size."""
        chain = None
        if avatar is not None:
            chain = self._new_chain(avatar, renderer)
            chain.renderer.render_frame(0, np.zeros(4, np.float32))
        with self._lock:
            if driver:
                self.driver.set_driver(get_driver(driver, self.fps))
                self.driver_name = driver
            if chain is not None:
                self.chain, self._rate_changes_seen = chain, 0
            elif renderer:
                self.chain.switch(renderer)
            self._changes_seen = len(self.chain.changes)
            detail = {"renderer": self.chain.name, "driver": self.driver_name}
            if chain is not None:
                detail["avatar"] = avatar.name
            self._out.append(Notice("switched", detail))
            self._notify()

    def _new_chain(self, avatar: AvatarPackage, renderer: str | None = None) -> RenderChain:
        asked, profiles, still, options = self._chain_args
        return RenderChain(avatar, renderer or asked, 1.0 / self.fps, self.driver_name, profiles, still=still,
                           options=None if renderer else options, now=self.clock.now,
                           halve_when_late=self.live and self.deadlines, size=self.size)

    # -- frames out -----------------------------------------------------------------------------

    def poll(self, limit: int | None = None) -> list[Frame | Notice]:
        """Do what is due now (drive, render, end a quiet turn, make a due idle frame) and return
        what is ready, at most `limit` frames, without waiting."""
        with self._lock:
            return self._poll(limit)

    def next_wakeup(self) -> float | None:
        """Clock time at which `poll` has something to do by itself (end a turn, an idle frame)."""
        with self._lock:
            if self._closed or self._ended:
                return None
            if self._turn is not None:  # a pause ends a turn only where frames keep wall-clock deadlines:
                # a session read at its own pace (the API's streams) would see its reader's own work as pauses
                paced = self.live and self.deadlines
                return self._last_push_s + self._last_chunk_s + END_OF_TURN_GRACE_S if paced else None
            if self.idle_frames:
                return self._idle_since_s + (self._idle_made + 1) / self.fps
            return None

    def __iter__(self) -> Iterator[Frame]:
        """Frames as they become ready, waiting for audio (and idle frames) in between; ends after
        `end()` once every frame is out, or at `close()`."""
        while True:
            with self._lock:
                items, version = self._poll(1), self._version
            yield from (item for item in items if isinstance(item, Frame))
            if items:
                continue
            with self._lock:
                if self._version != version:
                    continue
                if self._finished():
                    return
                wake = self.next_wakeup()
                self._wake.wait(None if wake is None else max(0.0, wake - self.clock.now()))

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._async_items(notices=False)

    def events(self) -> AsyncIterator[Frame | Notice]:
        """As `async for frame in session`, with the notices (turns, drops, fallbacks) in order
        between the frames: what a transport reports to its client."""
        return self._async_items(notices=True)

    async def _async_items(self, notices: bool) -> AsyncIterator[Frame | Notice]:
        """As `__iter__`, rendering on a worker thread so the event loop stays free."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def waker() -> None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed
                pass

        with self._lock:
            self._async_wakers.add(waker)
        try:
            while True:
                event.clear()
                items, finished, wake = await asyncio.to_thread(self._poll_state)
                for item in items:
                    if notices or isinstance(item, Frame):
                        yield item
                if items:
                    continue
                if finished:
                    return
                timeout = None if wake is None else max(0.0, wake - self.clock.now())
                try:
                    await asyncio.wait_for(event.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            with self._lock:
                self._async_wakers.discard(waker)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside ---------------------------------------------------------------------------------

    def _poll_state(self) -> tuple[list, bool, float | None]:
        with self._lock:
            items = self._poll(1)
            return items, not items and self._finished(), self.next_wakeup()

    def _poll(self, limit: int | None) -> list[Frame | Notice]:
        if not self._closed:
            self._tick()  # first: time spent rendering below must not end a turn whose audio is coming
            if self.live and self._turn is not None:
                rows = self.driver.ready(arrived=self._turn.pts_of(self._turn.received))
                if len(rows):
                    self._make(self.driver.next_frame - len(rows), rows)
        out: list[Frame | Notice] = []
        frames = 0
        while self._out and (limit is None or frames < limit):
            item = self._out[0]
            if isinstance(item, _Block | _LiveBlock):
                frame = item.next(self) if isinstance(item, _Block) else self._live_frame(item)
                if frame is None:
                    self._out.popleft()
                    out += item.notices(self.drop_late)
                    continue
                out.append(frame)
                out += self._changes()
                frames += 1
                continue
            self._out.popleft()
            out.append(item)
            frames += isinstance(item, Frame)
        return out

    def _finished(self) -> bool:
        return self._closed or (self._ended and not self._out and self._turn is None)

    def _notify(self) -> None:
        self._version += 1
        self._wake.notify_all()
        for waker in list(self._async_wakers):
            waker()

    def _check_open(self) -> None:
        if self._closed or self._ended:
            raise NotSupportedError("this session has ended; open a new one to render more audio")

    def _tick(self) -> None:
        """End a live turn whose audio stopped coming; make the idle frame that is due, if any."""
        wake = self.next_wakeup()
        now = self.clock.now()
        if wake is None or now < wake:
            return
        if self._turn is not None:
            self._end_turn(pause=True)
            return
        due = int((now - self._idle_since_s) * self.fps)  # idle frames due by now; make the latest
        self._idle_made = due
        self._out.append(self._idle_frame(self._idle_since_s + due / self.fps))

    def _start_turn(self, samples: np.ndarray, sample_rate: int, now: float) -> _Turn:
        paused, self._paused = self._paused, None
        if paused is not None and paused.takes(samples, sample_rate):
            self._turn = paused  # after a pause: the clock goes on where it stopped
        else:
            first = self.driver.next_frame
            self.driver.pad_to(self.frame_clock.frame_start(first))  # a new turn starts on a frame boundary
            self._turn = _Turn(first, self.driver.received, sample_rate, samples.shape[1], samples.dtype,
                               FrameClock(self.fps, sample_rate))
        self.turns += 1
        self._turn.arrived_s = now
        self._due_anchor = (now, self._turn.pts_of(self._turn.received))
        self._empty_audio = (sample_rate, samples[:0])
        self._out.append(Notice("turn_started", {"turn": self.turns, "audioMs": _ms(self.driver.received)}))
        return self._turn

    def _end_turn(self, pause: bool = False) -> None:
        """Frames for all of the turn's audio (the last may hold less than a frame's worth); then
        idle. A pause keeps the clock where the audio stopped, so the turn can go on (see the
        module docstring); otherwise the analysis audio is padded to the last frame's end."""
        turn = self._turn
        if turn is None:
            self._paused = None
            return
        now = self.clock.now()
        end = self.frame_clock.frame_start(turn.first_frame + turn.clock.frame_count(turn.received))
        tail = self._resampler.flush()
        self.driver.append(tail[: max(0, end - self.driver.received)])
        if not pause:
            self.driver.pad_to(end)  # analysis audio ends on the turn's last frame boundary
        rows = self.driver.flush()
        if self.refuse_silence and not (np.abs(rows) >= CLOSED_MOUTH_EPS).any():
            raise BadAudioError("the audio is silent (no speech found); give audio with someone speaking in it")
        self._flush_s = now
        self._make(self.driver.next_frame - len(rows), rows)
        self._flush_s = None
        self._arrivals.clear()
        self._turn = None
        self._paused = turn if pause else None
        self._go_idle(now)
        self._out.append(Notice("turn_ended", {"turn": self.turns, "audioMs": _ms(self.driver.received)}))

    def _go_idle(self, now: float) -> None:
        self._idle_since_s, self._idle_made = now, 0

    def _make(self, first: int, rows: np.ndarray) -> None:
        """Queue frames first.. for rows (n, 4) as a block rendered when read (`poll`): live ones
        with the times their audio arrived, checked against their deadlines when rendered; offline
        ones planned across the block by the renderer."""
        turn = self._turn
        audio = [turn.take(k - turn.first_frame) for k in range(first, first + len(rows))]
        if not self.live:
            self._out.append(_Block(first, rows, audio, turn.sample_rate,
                                    self.chain.render_rows(first + self._idle_total, rows)))
            return
        ready = [self._arrivals.time_of(self.driver.needed_sample(k)) for k in range(first, first + len(rows))]
        ready = [self._flush_s if r is None else r for r in ready]
        deadline = [max(r, self._due_s(k)) + self.preset.deadline_ms / 1000 if self.deadlines else float("inf")
                    for k, r in enumerate(ready, start=first)]
        self._arrivals.forget_before(self.driver.needed_sample(first + len(rows)))
        self._out.append(_LiveBlock(first, rows, audio, turn.sample_rate, turn, ready, deadline,
                                    final=self._flush_s is not None))

    def _live_frame(self, block: _LiveBlock) -> Frame | None:
        """Block's next frame rendered now, or repeated / skipped if late or silent; None at its end.
        At half rate every other frame is held back, and goes out blended half and half from its
        neighbours once the next one is rendered (before it); never a turn's first frame (the one a
        listener waits for: held back, it would wait for the next frame's audio)."""
        while not block.made and block.done < len(block.rows):
            i, block.done = block.done, block.done + 1
            k, row = block.first + i, block.rows[i]
            if self.clock.now() > block.deadline[i]:
                block.late += 1 + self._release_between(block, None, None)
                self.chain.record(True)
                if self.drop_late:
                    continue
                image = self._last_image if self._last_image is not None else self._render(k + self._idle_total, row)
            elif self.skip_silent and np.all(np.abs(row) < CLOSED_MOUTH_EPS):
                block.late += self._release_between(block, None, None)
                block.silent += 1
                continue
            elif (self.chain.half_rate and self._between is None and block.turn.arrived_s is None
                  and not (block.final and i == len(block.rows) - 1)):
                turn_arrived_s, block.turn.arrived_s = block.turn.arrived_s, None
                self._between = (k, row, block.audio[i], block.sample_rate, block.ready[i], block.deadline[i],
                                 turn_arrived_s)
                continue
            else:
                previous = self._last_image
                image = self._render(k + self._idle_total, row)
                self.chain.record(False)
                block.late += self._release_between(block, previous, image)
            turn_arrived_s, block.turn.arrived_s = block.turn.arrived_s, None
            start, end = self.frame_clock.frame_span(k)
            block.made.append(Frame(k, image, block.audio[i], block.sample_rate, start, end - start, False,
                                    self.chain.name, row, block.ready[i], block.deadline[i],
                                    turn_arrived_s=turn_arrived_s))
        if not block.made and block.final:  # the turn ends: nothing comes after a frame held back
            block.late += self._release_between(block, None, None)
        return block.made.popleft() if block.made else None

    def _release_between(self, block: _LiveBlock, previous: np.ndarray | None, after: np.ndarray | None) -> int:
        """Queue in `block` the frame held back at half rate, blended from its neighbours' images
        (rendered itself where one is missing); 1 if it was past its deadline (then dropped or
        repeated like any late frame), else 0."""
        held, self._between = self._between, None
        if held is None:
            return 0
        k, row, audio, rate, ready, deadline, turn_arrived_s = held
        late, interpolated = self.clock.now() > deadline, False
        if late:
            self.chain.record(True)
            if self.drop_late:
                return 1
            image = self._last_image if self._last_image is not None else self._render(k + self._idle_total, row)
        elif previous is None or after is None:
            image = self._render(k + self._idle_total, row)
            self.chain.record(False)
        else:
            image, interpolated = cv2.addWeighted(previous, 0.5, after, 0.5, 0.0), True
        start, end = self.frame_clock.frame_span(k)
        block.made.append(Frame(k, image, audio, rate, start, end - start, False, self.chain.name, row, ready,
                                deadline, turn_arrived_s=turn_arrived_s, interpolated=interpolated))
        return int(late)

    def _render(self, motion_index: int, row: np.ndarray, timed: bool = True) -> np.ndarray:
        self._last_image = fit(self.chain.render(motion_index, row, timed=timed), self.size)
        return self._last_image

    def _idle_frame(self, due_s: float) -> Frame:
        k = self.driver.next_frame
        row = np.zeros(4, np.float32)
        image = self._render(k + self._idle_total, row, timed=False)  # idle frames have no audio to keep up with
        self._idle_total += 1
        rate, empty = self._empty_audio
        return Frame(k, image, empty, rate, self.driver.received, 0, True, self.chain.name, row, due_s,
                     due_s + self.preset.deadline_ms / 1000)

    def _due_s(self, k: int) -> float:
        """When frame k is due to play if the turn's audio plays in real time from its arrival."""
        arrived, tick = self._due_anchor
        return arrived + (self.frame_clock.frame_start(k + 1) - tick + self.driver.lookahead) / SAMPLE_RATE

    def _changes(self) -> list[Notice]:
        new = self.chain.changes[self._changes_seen :]
        rates = self.chain.rate_changes[self._rate_changes_seen :]
        self._changes_seen, self._rate_changes_seen = len(self.chain.changes), len(self.chain.rate_changes)
        return [Notice("fallback", asdict(c)) for c in new] + [
            Notice("render_rate", {"halfRate": r.half_rate, "renderer": r.renderer, "detail": r.detail}) for r in rates]


@dataclass
class _Turn:
    """The pushed audio of one turn, kept as it came until its frames take it."""

    first_frame: int
    start_tick: int  # the clock tick of its first sample (frame first_frame's start)
    sample_rate: int
    channels: int
    dtype: np.dtype
    clock: FrameClock  # frame spans in this turn's own samples
    received: int = 0
    buffer: np.ndarray | None = None
    buffer_start: int = 0
    arrived_s: float | None = None  # when its first audio arrived, until its first frame is made
    _parts: list = field(default_factory=list)

    def takes(self, samples: np.ndarray, sample_rate: int) -> bool:
        """Whether `samples` continue this turn (same rate, layout and sample type)."""
        return (sample_rate, samples.shape[1], samples.dtype) == (self.sample_rate, self.channels, self.dtype)

    def pts_of(self, sample: int) -> int:
        """The clock tick of this turn's sample index `sample`."""
        return self.start_tick + round(sample * SAMPLE_RATE / self.sample_rate)

    def append(self, samples: np.ndarray) -> None:
        self._parts.append(samples)
        self.received += len(samples)

    def take(self, k: int) -> np.ndarray:
        """The samples (n, channels) of the turn's k-th frame (fewer at the end), forgetting earlier
        ones; after a pause, also what came for the paused frame's span after it was made."""
        if self._parts:
            parts = ([self.buffer] if self.buffer is not None and len(self.buffer) else []) + self._parts
            self.buffer = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._parts = []
        end = min(self.clock.frame_span(k)[1], self.received)
        out = self.buffer[: max(0, end - self.buffer_start)]
        if end > self.buffer_start:
            self.buffer = self.buffer[end - self.buffer_start :]
            self.buffer_start = end
        return out


@dataclass
class _LiveBlock:
    """Live frames first.. of one turn, rendered one at a time as they are read (Session._live_frame):
    a poll that hands out one frame renders one. ready / deadline: session-clock s per row."""

    first: int
    rows: np.ndarray
    audio: list
    sample_rate: int
    turn: _Turn
    ready: list[float]
    deadline: list[float]
    final: bool = False  # made at the end of its turn: nothing comes after it
    done: int = 0
    late: int = 0
    silent: int = 0
    made: deque = field(default_factory=deque)  # frames made and not yet handed out (at half rate, two at once)

    def notices(self, drop_late: bool) -> list[Notice]:
        """What was not rendered: late (dropped, or repeated the last image) and silent frames."""
        late_reason = "late" if drop_late else "repeated"  # repeated: sent with the last image
        return [Notice("dropped", {"count": n, "reason": reason})
                for n, reason in ((self.late, late_reason), (self.silent, "silent")) if n]


@dataclass
class _Block:
    """Offline frames first.. of one turn, rendered one at a time as they are read."""

    first: int
    rows: np.ndarray
    audio: list
    sample_rate: int
    images: Iterator[np.ndarray]
    done: int = 0

    def next(self, session: Session) -> Frame | None:
        if self.done == len(self.rows):
            return None
        image = fit(next(self.images), session.size)
        i, self.done = self.done, self.done + 1
        start, end = session.frame_clock.frame_span(self.first + i)
        return Frame(self.first + i, image, self.audio[i], self.sample_rate, start, end - start, False, session.chain.name,
                     self.rows[i])

    def notices(self, drop_late: bool) -> list[Notice]:
        return []


@lru_cache(maxsize=1)
def _warm_up_speech() -> np.ndarray:
    """A second of the bundled speech (16 kHz mono float32): it takes a driver down its speech path."""
    return load_audio(bundled_asset("speech.wav"))[:SAMPLE_RATE]


def _ms(ticks: int) -> float:
    return ticks * 1000 / SAMPLE_RATE
