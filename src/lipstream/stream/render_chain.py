"""The renderer of a session with its fallback chain: bank -> warp -> static.

If the current renderer raises, the frame is rendered again by the next one in the chain, which
stays in use. If it misses its deadline repeatedly (MAX_MISSES of the last MISS_WINDOW_FRAMES
frames took longer than a frame period to render, or were dropped as late), the session also
moves down the chain. `switch` changes renderer on request mid-session. Every change is
returned as a `Fallback` record for the status message and the metrics.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from lipstream.avatar.package import AvatarPackage
from lipstream.errors import LipstreamError, RenderFailedError
from lipstream.render.base import Renderer, create_renderer, default_renderer_name

log = logging.getLogger(__name__)

CHAIN = ("bank", "warp", "static")
MISS_WINDOW_FRAMES = 25
MAX_MISSES = 8


@dataclass(frozen=True)
class Fallback:
    """A change of renderer: from -> to, and why ("error", "deadline" or "request")."""

    from_renderer: str
    to_renderer: str
    reason: str
    detail: str = ""


class RenderChain:
    """Renders frames with the first renderer of the chain that works for the avatar."""

    def __init__(self, avatar: AvatarPackage, renderer: str, frame_period_s: float):
        self.avatar = avatar
        self.frame_period_s = frame_period_s
        self.changes: list[Fallback] = []
        self._misses: deque[bool] = deque(maxlen=MISS_WINDOW_FRAMES)
        name = default_renderer_name(avatar) if renderer == "auto" else renderer
        self.renderer: Renderer = create_renderer(name, avatar)

    @property
    def name(self) -> str:
        return self.renderer.name

    def render(self, k: int, params: np.ndarray) -> np.ndarray:
        """Frame k (H, W, 3) uint8 RGB for params (4,), falling back down the chain on errors."""
        while True:
            start = time.perf_counter()
            try:
                frame = self.renderer.render_frame(k, params)
            except Exception as exc:  # any renderer failure is survivable while the chain has more
                log.warning("renderer %s failed on frame %d: %s", self.name, k, exc)
                self._fall_back("error", f"{type(exc).__name__}: {exc}")
                continue
            self.record(time.perf_counter() - start > self.frame_period_s)
            return frame

    def record(self, missed: bool) -> None:
        """Count a frame that missed (or made) its deadline; too many misses move down the chain."""
        self._misses.append(missed)
        if sum(self._misses) >= MAX_MISSES and self._next() is not None:
            self._fall_back("deadline", f"{sum(self._misses)} of the last {len(self._misses)} frames were late")

    def switch(self, name: str) -> None:
        """Use renderer `name` from the next frame on (NotSupportedError if it can't be used)."""
        previous = self.name
        self.renderer = create_renderer(name, self.avatar)
        self._misses.clear()
        self.changes.append(Fallback(previous, self.name, "request"))

    def _later(self) -> tuple[str, ...]:
        """The renderers after the current one in the chain (all but bank for one not in it)."""
        return CHAIN[CHAIN.index(self.name) + 1 :] if self.name in CHAIN else CHAIN[1:]

    def _next(self) -> str | None:
        later = self._later()
        return later[0] if later else None

    def _fall_back(self, reason: str, detail: str) -> None:
        previous = self.name
        for name in self._later():
            try:
                self.renderer = create_renderer(name, self.avatar)
            except LipstreamError as exc:
                log.warning("fallback renderer %s unusable: %s", name, exc)
                continue
            self._misses.clear()
            self.changes.append(Fallback(previous, name, reason, detail))
            return
        raise RenderFailedError(f"every renderer failed (last: {previous}: {detail}); the session can't go on")
