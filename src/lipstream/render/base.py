"""The renderer interface and the registry of renderers by name.

A renderer turns mouth parameters into full avatar frames. It is built once per avatar and
session, then asked for frame k (the clock's frame index) with that frame's parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from lipstream.avatar.package import AvatarPackage
from lipstream.errors import NotSupportedError
from lipstream.motion.params import MouthTrack

_REGISTRY: dict[str, type["Renderer"]] = {}


class Renderer(ABC):
    """Renders uint8 H x W x 3 RGB frames of an avatar from mouth parameters."""

    name: ClassVar[str]
    # The renderer needs the frame's audio window too (neural renderers).
    needs_audio: ClassVar[bool] = False

    def __init__(self, avatar: AvatarPackage, *, still: bool = False, seed: int = 0):
        self.avatar = avatar
        self.still = still
        self.seed = seed

    @abstractmethod
    def render_frame(self, k: int, params: np.ndarray) -> np.ndarray:
        """Frame k of the output for mouth parameters (4,) float32 (PARAM_NAMES order)."""

    def render(self, track: MouthTrack, first: int = 0) -> Iterator[np.ndarray]:
        """Frames first, first+1, ... for the rows of `track`, in order (renderers may plan
        across the track)."""
        for i in range(len(track)):
            yield self.render_frame(first + i, track.values[i])


def register(cls: type[Renderer]) -> type[Renderer]:
    """Class decorator adding a renderer to the registry under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def renderer_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def default_renderer_name(avatar: AvatarPackage) -> str:
    """`bank` for video avatars (the person's own mouths), `warp` for photos."""
    return "bank" if avatar.kind == "video" else "warp"


def create_renderer(name: str, avatar: AvatarPackage, **options) -> Renderer:
    """Build the renderer `name` ("auto" picks the default for the avatar) for an avatar."""
    _load_builtin()
    if name == "auto":
        name = default_renderer_name(avatar)
    if name not in _REGISTRY:
        raise NotSupportedError(f"unknown renderer {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}, auto")
    return _REGISTRY[name](avatar, **options)


def _load_builtin() -> None:
    from lipstream.render import bank, neural, static, warp  # noqa: F401  (registers them)
