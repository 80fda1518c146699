"""lipstream: speech audio in, a lip-synced talking-face video of a chosen avatar out.

    import lipstream
    with lipstream.open("default") as avatar:
        frames, info = avatar.render("speech.wav")
        for frame in frames:
            ...
"""

from lipstream.errors import (
    BadAudioError,
    BadAvatarError,
    BadVideoError,
    InternalError,
    LipstreamError,
    MissingProfilesError,
    NotSupportedError,
    RenderFailedError,
)

__version__ = "0.1.0"
__all__ = [
    "Avatar", "BadAudioError", "BadAvatarError", "BadVideoError", "Frame", "InternalError", "LipstreamError",
    "MissingProfilesError", "NotSupportedError", "RenderFailedError", "RenderInfo", "Session", "open",
]


def __getattr__(name: str):
    # The API pulls in media and vision libraries: load it on first use, not on `import lipstream`.
    if name in ("open", "Avatar", "Frame", "RenderInfo"):
        from lipstream import api

        return getattr(api, name)
    if name == "Session":
        from lipstream.session import Session

        return Session
    raise AttributeError(f"module 'lipstream' has no attribute {name!r}")
