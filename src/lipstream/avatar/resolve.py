"""Finding an avatar by what the user typed: `default`, a package directory, a photo or video
(prepared on the fly into a cache), or a name inside an avatars directory (the server's)."""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path

from lipstream.avatar.package import AvatarPackage, is_package, load_package
from lipstream.avatar.prepare import DEFAULT_FPS, Progress, prepare
from lipstream.errors import BadAvatarError

DEFAULT_NAME = "default"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def bundled_asset(name: str) -> Path:
    """Path of a file shipped in lipstream/assets/default/ (portrait.png, speech.wav)."""
    return Path(str(resources.files("lipstream") / "assets" / "default" / name))


def cache_dir() -> Path:
    """Where avatars prepared on the fly are kept: $LIPSTREAM_CACHE or ~/.cache/lipstream."""
    root = os.environ.get("LIPSTREAM_CACHE") or Path.home() / ".cache" / "lipstream"
    return Path(root) / "avatars"


def resolve_avatar(
    spec: str | os.PathLike,
    avatars_dir: Path | None = None,
    fps: float = DEFAULT_FPS,
    progress: Progress | None = None,
) -> AvatarPackage:
    """Load the avatar `spec` names, preparing a photo or video on first use.

    spec: "default" (the bundled portrait), a package directory, a photo/video path, or with
    `avatars_dir` given, a package name inside it (names can't leave that directory).
    """
    text = str(spec)
    if text == DEFAULT_NAME and not (avatars_dir and (avatars_dir / DEFAULT_NAME).exists()):
        return _prepared(bundled_asset("portrait.png"), fps, progress, DEFAULT_NAME)
    if avatars_dir is not None:
        if not SAFE_NAME.fullmatch(text):
            raise BadAvatarError(f"{text!r} is not a valid avatar name (letters, digits, '.', '_', '-')")
        return load_package(avatars_dir / text)
    path = Path(spec)
    if path.is_dir() or is_package(path):
        return load_package(path)
    if path.is_file():
        return _prepared(path, fps, progress, path.stem)
    raise BadAvatarError(
        f"avatar {text!r} not found: give 'default', a package made by lipstream prepare, or a photo/video file"
    )


def _prepared(source: Path, fps: float, progress: Progress | None, name: str) -> AvatarPackage:
    """The package for `source`, prepared into the cache unless it is there already."""
    key = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{key}-{fps:g}fps"
    if is_package(target):
        try:
            return load_package(target)
        except BadAvatarError:
            pass  # an old or damaged cache entry: prepare it again below
    return load_package(prepare(source, target, fps=fps, name=name, progress=progress))
