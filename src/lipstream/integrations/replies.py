"""A live session driven from asyncio, reply by reply: what the voice-agent plugins share.

    stream = ReplyStream("default")                 # opens (prepares, loads, warms) the avatar now
    stream.push(pcm16_bytes, 24000)                 # a reply's audio, as the TTS made it
    stream.end_reply(marker)                        # the reply is complete
    async for item in stream:                       # Frame | ReplyEnd | a mark, in order
        ...
    stream.interrupt()                              # drop everything not handed out yet

The session (lipstream.session.Session) decides every frame: look-ahead, deadlines, idle frames
between replies, the exact input audio each frame carries. This class only runs the session's
calls in order on one worker thread, so rendering never blocks the event loop, and gives it a
reply's audio just ahead of the frames made (its look-ahead plus `FEED_AHEAD_S`), while at most
`RENDER_AHEAD_FRAMES` made frames wait for the consumer: a TTS that delivers a whole reply at
once does not make the session render the whole reply in one go while the consumer starves,
and an interruption throws away little rendering.

Marks (`mark(obj)`, and the `ReplyEnd` that `end_reply` adds) are handed out in order, right
after the last frame of the audio pushed before them.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lipstream.api import Avatar
from lipstream.api import open as open_avatar
from lipstream.audio.pcm import as_samples
from lipstream.errors import NotSupportedError
from lipstream.session import Clock, Frame, Notice, Preset

# Rendered frames waiting for the consumer, at most.
RENDER_AHEAD_FRAMES = 4
# Audio (s) given to the session beyond its look-ahead and not yet made into frames: what one poll
# of the session may render at once; it also covers the driver's batching (its CPU cap).
FEED_AHEAD_S = 0.2
_END = object()


@dataclass
class ReplyStats:
    """One reply's figures; times are session-clock seconds (lipstream.session.clock).

    samples_in / samples_out: samples pushed / handed out in frames (at sample_rate).
    dropped: frames the session could not render in time (sent with the previous image).
    """

    number: int
    first_audio_s: float
    sample_rate: int = 0
    samples_in: int = 0
    samples_out: int = 0
    frames: int = 0
    dropped: int = 0
    first_frame_s: float | None = None
    interrupted: bool = False

    @property
    def time_to_first_frame_s(self) -> float | None:
        """From the reply's first audio in to its first frame out."""
        return None if self.first_frame_s is None else self.first_frame_s - self.first_audio_s

    @property
    def seconds_out(self) -> float:
        """Audio handed out in frames (s)."""
        return self.samples_out / self.sample_rate if self.sample_rate else 0.0


@dataclass
class ReplyEnd:
    """Handed out right after the last frame of a reply; `marker` is what `end_reply` was given."""

    stats: ReplyStats
    marker: Any = None


@dataclass
class Pending:
    """Audio (n, channels) at sample_rate as it was pushed, or a mark, not handed out yet."""

    audio: np.ndarray | None = None
    sample_rate: int = 0
    mark: Any = None


@dataclass
class _Chunk:
    samples: np.ndarray  # (n, channels) as pushed
    sample_rate: int
    reply: ReplyStats
    left: int = field(init=False)  # samples not yet handed out in frames

    def __post_init__(self) -> None:
        self.left = len(self.samples)


class _Flush:
    pass


@dataclass
class _Mark:
    item: Any


class ReplyStream:
    """One avatar's live session for an asyncio consumer (see the module docstring).

    avatar: a name or path as `lipstream.open` takes it, or an opened `lipstream.Avatar`.
    driver / renderer / fps / size / preset: as `Session` takes them (None: the defaults).
    clock: the session's clock (tests). Iterate it from one task; push from the same event loop.
    """

    def __init__(self, avatar: str | os.PathLike | Avatar = "default", *, driver: str | None = None,
                 renderer: str | None = None, fps: float | None = None,
                 size: tuple[int | None, int | None] | None = None, preset: str | Preset | None = None,
                 clock: Clock | None = None):
        opened = avatar if isinstance(avatar, Avatar) else open_avatar(avatar, fps=fps)
        self.session = opened.session(fps=fps, size=size, driver=driver, renderer=renderer, preset=preset,
                                      clock=clock)
        self.clock = self.session.clock
        self.fps: float = self.session.fps
        self.size: tuple[int, int] = self.session.size
        self.ahead_s = self.session.lookahead_s + FEED_AHEAD_S
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipstream-session")
        self._held: deque[_Chunk | _Flush | _Mark] = deque()  # not given to the session yet, in order
        self._fed: deque[_Chunk] = deque()  # given to the session, not all handed out in frames yet
        self._reply: ReplyStats | None = None  # the reply being pushed
        self._replies = 0
        self._generation = 0  # bumped by interrupt: work started before it is stale
        self._wake: asyncio.Event | None = None
        self._ready: asyncio.Queue | None = None  # (generation, Frame | mark, ReplyStats | None)
        self._in_hand: Frame | None = None  # made, waiting for room in _ready
        self._failure: BaseException | None = None
        self._closed = False

    @property
    def generation(self) -> int:
        """How many times the stream was interrupted: what was made before a change is stale."""
        return self._generation

    @property
    def lookahead_s(self) -> float:
        """Audio (s) after a frame's span the session waits for before making the frame."""
        return self.session.lookahead_s

    # -- in ------------------------------------------------------------------------------------

    def push(self, audio, sample_rate: int, channels: int | None = None) -> ReplyStats:
        """Add audio to the current reply (starting one if none is open): PCM16 bytes or an array,
        as `Session.push_audio` takes it. BadAudioError at once if it is malformed."""
        samples = as_samples(audio, sample_rate, channels)
        self._check_open()
        if self._reply is None:
            self._reply = self._new_reply(sample_rate)
        if len(samples):
            self._reply.samples_in += len(samples)
            self._held.append(_Chunk(samples, sample_rate, self._reply))
            self._wake_up()
        return self._reply

    def end_reply(self, marker: Any = None) -> ReplyStats:
        """The current reply is complete: its last frame is made, then `ReplyEnd(stats, marker)`."""
        self._check_open()
        reply, self._reply = self._reply or self._new_reply(0), None
        self._held.extend((_Flush(), _Mark(ReplyEnd(reply, marker))))
        self._wake_up()
        return reply

    def mark(self, item: Any) -> None:
        """Hand `item` out right after the frames of the audio pushed so far."""
        self._check_open()
        self._held.append(_Mark(item))
        self._wake_up()

    def interrupt(self) -> list[ReplyStats]:
        """Drop all audio, frames and marks not handed out yet and go idle at once; returns the
        replies cut short (their samples_out is what was handed out)."""
        self._generation += 1
        cut: list[ReplyStats] = []
        for reply in [c.reply for c in self._fed] + [e.reply for e in self._held if isinstance(e, _Chunk)] + [self._reply]:
            if reply is not None and reply not in cut:
                reply.interrupted = True
                cut.append(reply)
        self._held.clear()
        self._fed.clear()
        self._drop_ready()
        self._reply = None
        if not self._closed:
            self._submit(self.session.interrupt)
        self._wake_up()
        return cut

    def take_pending(self) -> list[Pending]:
        """Everything pushed or marked and not handed out yet, in order, removed from the stream
        (none of it is handed out after this): what a caller passes on without video when
        rendering fails (audio as pushed)."""
        pending = []
        while self._ready is not None and not self._ready.empty():  # made, not handed out yet
            generation, item, _ = self._ready.get_nowait()
            if generation != self._generation or item is _END:
                continue
            if not isinstance(item, Frame):
                pending.append(Pending(mark=item))
            elif len(item.audio):
                pending.append(Pending(item.audio, item.sample_rate))
        if self._in_hand is not None and len(self._in_hand.audio):  # made, waiting for room in the queue
            pending.append(Pending(self._in_hand.audio, self._in_hand.sample_rate))
        self._generation += 1  # what the producer holds now is stale
        pending += [Pending(c.samples[len(c.samples) - c.left :], c.sample_rate) for c in self._fed if c.left]
        for entry in self._held:
            if isinstance(entry, _Chunk):
                pending.append(Pending(entry.samples, entry.sample_rate))
            elif isinstance(entry, _Mark):
                pending.append(Pending(mark=entry.item))
        self._fed.clear()
        self._held.clear()
        self._reply = None
        return pending

    def busy(self) -> bool:
        """Whether audio or marks are still waiting to be handed out."""
        return bool(self._held or self._fed or self._reply)

    def close(self) -> None:
        """Stop: the iterator ends; the session is closed."""
        if self._closed:
            return
        self._closed = True
        self._held.clear()
        self._fed.clear()
        self._drop_ready()
        self._worker.submit(self.session.close)
        self._worker.shutdown(wait=False)
        self._wake_up()

    # -- out -----------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Frame | ReplyEnd | Any]:
        return self._items()

    async def _items(self) -> AsyncIterator[Frame | ReplyEnd | Any]:
        """What the producer made, in order, minus what an interruption made stale."""
        self._wake = asyncio.Event()
        self._ready = asyncio.Queue(RENDER_AHEAD_FRAMES)
        producer = asyncio.create_task(self._produce())
        try:
            while True:
                generation, item, reply = await self._ready.get()
                if item is _END:
                    if self._failure is not None:
                        raise self._failure
                    return
                if generation != self._generation:
                    continue
                if reply is not None:
                    reply.frames += 1
                    reply.samples_out += len(item.audio)
                    if reply.first_frame_s is None:
                        reply.first_frame_s = self.clock.now()
                yield item
        finally:
            producer.cancel()

    async def _produce(self) -> None:
        """Feed the session, poll it on the worker, queue its frames (waiting while the queue is
        full) and the marks between them; idle, wait for a push or the session's next wakeup."""
        loop = asyncio.get_running_loop()
        starved = False  # the last poll made nothing although audio was held back
        try:
            while not self._closed and self._failure is None:
                mark = self._ready_mark()
                if mark is not None:
                    await self._ready.put((self._generation, mark, None))
                    continue
                self._feed(more=starved)
                generation = self._generation
                self._wake.clear()
                items, wake_s = await loop.run_in_executor(self._worker, self._poll)
                frames = 0
                for item in items:
                    if generation != self._generation or self._closed:
                        break
                    if isinstance(item, Notice):
                        self._note(item)
                        continue
                    frames += 1
                    self._in_hand = item
                    await self._ready.put((generation, item, self._account(item)))
                    self._in_hand = None
                starved = not frames and self._feedable()
                if frames or starved or generation != self._generation:
                    continue
                timeout = None if wake_s is None else max(0.0, wake_s - self.clock.now())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        except Exception as exc:  # the consumer raises it after the frames made before it
            self._failure = exc
            await self._ready.put((self._generation, _END, None))
            return
        except BaseException:
            self._end_ready()
            raise
        self._end_ready()

    # -- inside --------------------------------------------------------------------------------

    def _new_reply(self, sample_rate: int) -> ReplyStats:
        self._replies += 1
        return ReplyStats(self._replies, self.clock.now(), sample_rate)

    def _check_open(self) -> None:
        if self._closed:
            raise NotSupportedError("this avatar stream is closed; make a new one")

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _submit(self, call, *args, **kwargs) -> Future:
        future = self._worker.submit(call, *args, **kwargs)
        future.add_done_callback(self._keep_failure)
        return future

    def _keep_failure(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    def _poll(self) -> tuple[list[Frame | Notice], float | None]:
        """On the worker: the session's next frame (rendered now) and the notices before it, and
        when it next has something by itself; a frame goes to the consumer as soon as it is drawn."""
        return self.session.poll(limit=1), self.session.next_wakeup()

    def _feed(self, more: bool = False) -> None:
        """Give the session held audio (and the flushes between replies) up to `ahead_s` beyond
        the frames made, or one chunk more if `more` (the session's driver waits for a larger
        batch); stop at a mark (it waits for the frames before it)."""
        now = self.clock.now()
        while self._held:
            entry = self._held[0]
            if isinstance(entry, _Mark):
                return
            if isinstance(entry, _Chunk):
                if sum(c.left / c.sample_rate for c in self._fed) >= self.ahead_s and not more:
                    return
                more = False
                self._submit(self.session.push_audio, entry.samples, entry.sample_rate, arrived_s=now)
                self._fed.append(entry)
            else:
                self._submit(self.session.flush)
            self._held.popleft()

    def _feedable(self) -> bool:
        return bool(self._held) and not isinstance(self._held[0], _Mark)

    def _ready_mark(self) -> Any:
        if self._held and isinstance(self._held[0], _Mark) and not self._fed:
            return self._held.popleft().item
        return None

    def _account(self, frame: Frame) -> ReplyStats | None:
        """Take a frame's audio off the chunks given to the session; the reply it belongs to."""
        if frame.idle or not self._fed:
            return None
        reply = self._fed[0].reply
        n = len(frame.audio)
        while n and self._fed:
            chunk = self._fed[0]
            take = min(n, chunk.left)
            chunk.left -= take
            n -= take
            if not chunk.left:
                self._fed.popleft()
        return reply

    def _end_ready(self) -> None:
        self._drop_ready()
        self._ready.put_nowait((self._generation, _END, None))

    def _drop_ready(self) -> None:
        while self._ready is not None and not self._ready.empty():
            self._ready.get_nowait()

    def _note(self, notice: Notice) -> None:
        if notice.event == "dropped" and self._fed:
            self._fed[0].reply.dropped += notice.detail["count"]
