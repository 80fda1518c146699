"""The renderer of a session with its fallback chain.

`auto` with this machine's measured profiles (`lipstream bench`): the selector's pick for the
session (its driver, at least its frame rate, sync within 80 ms, on the devices here, among the
renderers the avatar can use), then the other feasible backends that are faster, then static.
`auto` without profiles, or a named renderer: bank -> warp -> static from the first that applies.

If the current renderer raises, the frame is rendered again by the next one in the chain, which
stays in use. If it can't keep up (MAX_MISSES of the last MISS_WINDOW_FRAMES frames missed their
deadline, or its mean render time over the last MISS_WINDOW_FRAMES frames of speech is longer
than a frame period), the session also moves down the chain. A mean, not a count of slow
frames: on a shared machine single renders are stretched by preemption without the renderer
falling behind. Idle frames are not timed: nothing waits on them. A chain made with
`halve_when_late` first renders every other frame (`half_rate`; the session blends the frames
between): HALF_RATE_MISSES missed deadlines, or a mean render time over a frame period, halve
the rate, and a render then has two frame periods; only MAX_MISSES misses, or a mean over two
periods, at half rate move down the chain (the next renderer starts at full rate). At half rate,
a window of renders whose mean is under RECOVER_SHARE of a frame period brings full rate back.
Each change of rate is a `RateChange` in `rate_changes`. `switch` changes renderer on request mid-session. Every change is
returned as a `Fallback` record for the status message and the metrics. Render times are read
from the session's clock (`now`), never from the wall clock directly.

Offline, `render_rows` renders a whole block of rows through the renderer's `render` (which may
plan across the block, as bank's Viterbi path does), falling back per frame after an error.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from lipstream.avatar.package import AvatarPackage, photo_at_size
from lipstream.errors import LipstreamError, NotSupportedError, RenderFailedError
from lipstream.motion.params import MouthTrack
from lipstream.render.base import Renderer, create_renderer, default_renderer_name
from lipstream.select import Constraints, Profile, choose, load_history

log = logging.getLogger(__name__)

CHAIN = ("bank", "warp", "static")
DRAWN_AT_SIZE = ("warp", "static")  # renderers that draw on the photo itself: given it at the frame size
MISS_WINDOW_FRAMES = 25
MAX_MISSES = 8
HALF_RATE_MISSES = 4
RECOVER_SHARE = 0.6
AUTO_MAX_SYNC_MS = 80.0

Step = tuple[str, dict]  # a renderer's name and its options (the neural renderer's arch and variant)


@dataclass(frozen=True)
class Fallback:
    """A change of renderer: from -> to, and why ("error", "deadline" or "request")."""

    from_renderer: str
    to_renderer: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class RateChange:
    """Rendering every other frame (`half_rate` True) or every frame again, and why."""

    half_rate: bool
    renderer: str
    detail: str


class RenderChain:
    """Renders frames with the first renderer of the chain that works for the avatar."""

    def __init__(self, avatar: AvatarPackage, renderer: str, frame_period_s: float, driver: str = "",
                 profiles: list[Profile] | None = None, *, still: bool = False, options: dict | None = None,
                 now: Callable[[], float] = time.monotonic, halve_when_late: bool = False,
                 size: tuple[int, int] | None = None):
        """`options` go to the named renderer (e.g. the neural renderer's arch and variant);
        `still` to every renderer of the chain; `now` is the session's clock (monotonic s);
        `halve_when_late`: render every other frame before moving down the chain; `size`: the
        (width, height) of the frames made: a photo avatar smaller than that is drawn at it by
        DRAWN_AT_SIZE renderers (others draw at the avatar's size; frames are resized after)."""
        self.avatar = avatar
        small = size is not None and avatar.kind == "image" and size[0] < avatar.size[0] and size[1] < avatar.size[1]
        self._drawn = photo_at_size(avatar, size) if small else avatar
        self.frame_period_s = frame_period_s
        self.still = still
        self.now = now
        self.changes: list[Fallback] = []
        self.reason = ""  # why `auto` chose what it chose
        self._misses: deque[bool] = deque(maxlen=MISS_WINDOW_FRAMES)
        self._render_s: deque[float] = deque(maxlen=MISS_WINDOW_FRAMES)
        self.halve_when_late = halve_when_late
        self.half_rate = False
        self.rate_changes: list[RateChange] = []
        steps = auto_steps(avatar, 1.0 / frame_period_s, driver, profiles) if renderer == "auto" and profiles else None
        if steps:
            (name, options), self.reason = steps[0]
            self._chain: list[Step] = [step for step, _ in steps]
        else:
            name, options = (default_renderer_name(avatar) if renderer == "auto" else renderer), dict(options or {})
            self._chain = [(n, {}) for n in CHAIN]
        self._position = self._index(name, options)
        self.renderer: Renderer = self._create(name, options)

    @property
    def name(self) -> str:
        return self.renderer.name

    def render(self, k: int, params: np.ndarray, timed: bool = True) -> np.ndarray:
        """Frame k (H, W, 3) uint8 RGB for params (4,), falling back down the chain on errors;
        `timed`: its render time counts toward keeping up (not for idle frames)."""
        while True:
            start = self.now()
            try:
                frame = self.renderer.render_frame(k, params)
            except Exception as exc:  # any renderer failure is survivable while the chain has more
                log.warning("renderer %s failed on frame %d: %s", self.name, k, exc)
                self._fall_back("error", f"{type(exc).__name__}: {exc}")
                continue
            if timed:
                self._timed(self.now() - start)
            return frame

    def render_rows(self, first: int, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Frames first, first+1, ... for rows (n, 4), planned across the block by the renderer
        (no deadlines: offline); after an error the rest go frame by frame down the chain."""
        done = 0
        try:
            for frame in self.renderer.render(MouthTrack(rows, 1.0 / self.frame_period_s), first=first):
                yield frame
                done += 1
        except Exception as exc:
            log.warning("renderer %s failed on frame %d: %s", self.name, first + done, exc)
            self._fall_back("error", f"{type(exc).__name__}: {exc}")
            for i in range(done, len(rows)):
                yield self.render(first + i, rows[i])
    def record(self, missed: bool) -> None:
        """Count a frame that missed (or made) its deadline; too many misses halve the rate (with
        `halve_when_late`) or move down the chain."""
        self._misses.append(missed)
        misses = sum(self._misses)
        detail = f"{misses} of the last {len(self._misses)} frames were late"
        if self.halve_when_late and not self.half_rate and misses >= HALF_RATE_MISSES:
            self._set_half_rate(True, detail)
        elif misses >= MAX_MISSES and self._next() is not None:
            self._fall_back("deadline", detail)

    def _timed(self, seconds: float) -> None:
        """Count a render's time; a window whose mean exceeds the time a render has halves the
        rate (with `halve_when_late`) or moves down the chain; at half rate, a quick window brings
        full rate back."""
        self._render_s.append(seconds)
        if len(self._render_s) < self._render_s.maxlen:
            return
        mean = sum(self._render_s) / len(self._render_s)
        detail = (f"rendering took {1000 * mean:.0f} ms a frame on average over the last {len(self._render_s)} "
                  f"(a frame lasts {1000 * self.frame_period_s:.0f} ms)")
        if self.halve_when_late and not self.half_rate and mean > self.frame_period_s:
            self._set_half_rate(True, detail)
        elif mean > self.frame_period_s * (2 if self.half_rate else 1) and self._next() is not None:
            self._fall_back("deadline", detail)
        elif self.half_rate and mean < RECOVER_SHARE * self.frame_period_s:
            self._set_half_rate(False, detail)

    def _set_half_rate(self, half: bool, detail: str) -> None:
        self.half_rate = half
        self._misses.clear()
        self._render_s.clear()
        self.rate_changes.append(RateChange(half, self.name, detail))

    def switch(self, name: str) -> None:
        """Use renderer `name` from the next frame on (NotSupportedError if it can't be used)."""
        previous = self.name
        self.renderer = self._create(name, {})
        self._position = self._index(name, {})
        self._misses.clear()
        self._render_s.clear()
        self.changes.append(Fallback(previous, self.name, "request"))
        if self.half_rate:
            self._set_half_rate(False, f"switched to {self.name}")

    def _create(self, name: str, options: dict) -> Renderer:
        return create_renderer(name, self._drawn if name in DRAWN_AT_SIZE else self.avatar, still=self.still, **options)

    def _index(self, name: str, options: dict) -> int:
        """Where (name, options) is in the chain; a renderer not in it is put first."""
        if (name, options) not in self._chain:
            self._chain.insert(0, (name, options))
        return self._chain.index((name, options))

    def _later(self) -> list[Step]:
        """The steps after the current one in the chain."""
        return self._chain[self._position + 1 :]

    def _next(self) -> Step | None:
        later = self._later()
        return later[0] if later else None

    def _fall_back(self, reason: str, detail: str) -> None:
        previous = self.name
        for position, (name, options) in enumerate(self._later(), start=self._position + 1):
            try:
                self.renderer = self._create(name, options)
            except LipstreamError as exc:
                log.warning("fallback renderer %s unusable: %s", name, exc)
                continue
            self._position = position
            self._misses.clear()
            self._render_s.clear()
            self.changes.append(Fallback(previous, name, reason, detail))
            if self.half_rate:  # the next renderer starts at full rate
                self._set_half_rate(False, f"{name} took over from {previous}")
            return
        raise RenderFailedError(f"every renderer failed (last: {previous}: {detail}); the session can't go on")


def usable_renderers(avatar: AvatarPackage) -> tuple[str, ...]:
    """Renderers that can draw this avatar: bank needs footage, neural a trained network."""
    names = ["warp", "static"]
    if avatar.kind == "video":
        names.append("bank")
    if (avatar.manifest.get("models") or {}).get("neural"):
        names.append("neural")
    return tuple(names)


def auto_steps(avatar: AvatarPackage, fps: float, driver: str, profiles: list[Profile]) -> list[tuple[Step, str]]:
    """The chain `auto` uses, from measured profiles: the selector's pick for a live session, then
    feasible backends faster than it, then static. [] when no profile fits (the caller uses CHAIN)."""
    rows = [p for p in profiles if p.driver == driver] or list(profiles)
    rows = [p for p in rows if p.renderer != "neural" or _has_variant(avatar, p.variant)]
    constraints = Constraints(max_sync_ms=AUTO_MAX_SYNC_MS, min_fps=fps, device=_device(rows),
                              renderers=usable_renderers(avatar))
    try:
        choice = choose(rows, constraints, load_history())  # weighed by each backend's record in use
    except NotSupportedError as exc:
        log.info("auto renderer: %s; using the default chain", exc)
        return []
    best = choice.profile
    steps = [(_step(best), choice.reason)]
    for profile, _ in choice.ranked[1:]:
        if (profile.pipeline_fps or 0) > (best.pipeline_fps or 0) and _step(profile) not in [s for s, _ in steps]:
            steps.append((_step(profile), "faster fallback"))
    steps.append((("static", {}), "last resort"))
    return steps


def _step(profile: Profile) -> Step:
    if profile.renderer == "neural":
        arch, _, variant = profile.variant.partition("/")
        return "neural", {"arch": arch, "variant": variant}
    return profile.renderer, {}


def _has_variant(avatar: AvatarPackage, variant: str) -> bool:
    arch, _, name = variant.partition("/")
    entry = ((avatar.manifest.get("models") or {}).get("neural") or {}).get(arch)
    files = (entry or {}).get("files", {})
    return name in files or (name in ("fp16", "bf16") and "weights" in files)


def _device(profiles: list[Profile]) -> str:
    """"any" where a GPU profile could run here (torch sees CUDA), else "cpu"."""
    if not any(p.device == "gpu" for p in profiles):
        return "cpu"
    from lipstream.neural.runtime import cuda_available

    return "any" if cuda_available() else "cpu"
