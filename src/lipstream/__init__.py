"""lipstream: speech audio in, a lip-synced talking-face video of a chosen avatar out.

    import lipstream
    with lipstream.open("default") as avatar:
        for frame in avatar.render("speech.wav"):
            ...
"""

from lipstream.errors import BadAudioError, BadAvatarError, LipstreamError, NotSupportedError, RenderFailedError

__version__ = "0.1.0"
__all__ = [
    "Avatar", "BadAudioError", "BadAvatarError", "Frame", "LipstreamError", "NotSupportedError",
    "RenderFailedError", "open",
]


def __getattr__(name: str):
    # The API pulls in media and vision libraries: load it on first use, not on `import lipstream`.
    if name in ("open", "Avatar", "Frame"):
        from lipstream import api

        return getattr(api, name)
    raise AttributeError(f"module 'lipstream' has no attribute {name!r}")
