"""The project's exceptions: one subclass per kind of fix, each message says what to do.

The CLI prints these without a traceback and exits with `exit_code`.
"""


class LipstreamError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code = 1


class BadAudioError(LipstreamError):
    """The audio can't be used: unreadable, empty, silent, too long, wrong format."""

    exit_code = 3


class BadAvatarError(LipstreamError):
    """The avatar can't be used: no face, unknown name, corrupt or old package, too short."""

    exit_code = 4


class NotSupportedError(LipstreamError):
    """The request needs something this installation lacks (weights, a GPU, an option)."""

    exit_code = 5


class RenderFailedError(LipstreamError):
    """Rendering or writing the output failed for a reason outside the inputs (disk, encoder)."""

    exit_code = 6


class BadVideoError(LipstreamError):
    """A video to measure can't be used: unreadable, no picture, no usable face, too short."""

    exit_code = 7
