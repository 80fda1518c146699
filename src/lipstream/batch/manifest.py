"""A batch manifest: JSONL, one clip a line.

    {"id": "ep1-intro", "audio": "s3://bucket/voice/ep1.wav", "avatar": "s3://bucket/avatars/ann"}
    {"id": "ep1-outro", "audio": "outro.flac", "avatar": "ann", "renderer": "bank", "fps": 30}

`id` names the output (ID.mp4), `audio` is a path or URI, `avatar` what lipstream.store takes
(default "default"); the other keys are `render` options. Relative paths are read from the
manifest's folder. A malformed manifest is refused before any work, naming the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lipstream.avatar.resolve import SAFE_NAME
from lipstream.errors import NotSupportedError
from lipstream.sinks.mp4 import AUDIO_CODECS, QUALITY
from lipstream.store.disk import is_remote

OPTION_KEYS = ("fps", "size", "driver", "renderer", "quality", "still", "audio_codec")


@dataclass
class Clip:
    """One line of a manifest; `options` are RenderOptions fields (size as (width, height))."""

    id: str
    audio: str
    avatar: str = "default"
    options: dict = field(default_factory=dict)


def read_manifest(path: str | Path) -> list[Clip]:
    """The clips of a JSONL manifest; NotSupportedError naming the line of the first fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NotSupportedError(f"can't read the manifest {path}: {exc}") from None
    clips, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NotSupportedError(f"{where} is not JSON ({exc.msg}); write one JSON object per line") from None
        clip = _clip(row, where, path.parent)
        if clip.id in seen:
            raise NotSupportedError(f"{where}: the id {clip.id!r} is used twice; ids name the outputs")
        seen.add(clip.id)
        clips.append(clip)
    if not clips:
        raise NotSupportedError(f"the manifest {path} lists no clips")
    return clips


def _clip(row, where: str, base: Path) -> Clip:
    if not isinstance(row, dict):
        raise NotSupportedError(f"{where} is not a JSON object")
    unknown = set(row) - {"id", "audio", "avatar", *OPTION_KEYS}
    if unknown:
        raise NotSupportedError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; keys: id, audio, avatar, "
                                f"{', '.join(OPTION_KEYS)}")
    clip_id, audio = row.get("id"), row.get("audio")
    if not isinstance(clip_id, str) or not SAFE_NAME.fullmatch(clip_id):
        raise NotSupportedError(f"{where}: id must be a name of letters, digits, '.', '_', '-' (it names the file)")
    if not isinstance(audio, str) or not audio:
        raise NotSupportedError(f"{where}: audio must be a path or URI")
    avatar = row.get("avatar", "default")
    if not isinstance(avatar, str):
        raise NotSupportedError(f"{where}: avatar must be a string")
    options = {k: row[k] for k in OPTION_KEYS if k in row}
    if "quality" in options and options["quality"] not in QUALITY:
        raise NotSupportedError(f"{where}: quality must be one of {', '.join(QUALITY)}")
    if "audio_codec" in options and options["audio_codec"] not in AUDIO_CODECS:
        raise NotSupportedError(f"{where}: audio_codec must be one of {', '.join(AUDIO_CODECS)}")
    if "size" in options:
        options["size"] = _size(options["size"], where)
    return Clip(clip_id, _local(audio, base), _avatar(avatar, base), options)


def _size(value, where: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in (value.lower().split("x") if isinstance(value, str) else value))
    except (ValueError, TypeError, AttributeError):
        raise NotSupportedError(f"{where}: size must be \"WIDTHxHEIGHT\" or [width, height]") from None
    return width, height


def _avatar(spec: str, base: Path) -> str:
    """An avatar path relative to the manifest's folder if it is there; names and URIs as they are."""
    local = base / spec
    return str(local) if not is_remote(spec) and not Path(spec).is_absolute() and local.exists() else spec


def _local(spec: str, base: Path) -> str:
    """A relative path is relative to the manifest's folder; URIs are left as they are."""
    return spec if is_remote(spec) or Path(spec).is_absolute() else str(base / spec)
