"""`static`: the idle avatar, no mouth motion (the photo, or the video looped back and forth)."""

from __future__ import annotations

import numpy as np

from lipstream.render.base import Renderer, register
from lipstream.render.idle import IdleMotion


@register
class StaticRenderer(Renderer):
    name = "static"

    def __init__(self, avatar, **options):
        super().__init__(avatar, **options)
        self.idle = IdleMotion(avatar, still=self.still, seed=self.seed)

    def render_frame(self, k: int, params: np.ndarray) -> np.ndarray:
        return self.idle.frame(k)[0]
