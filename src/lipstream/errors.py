"""The project's exceptions: one subclass per kind of fix, each message says what to do.

The CLI prints these without a traceback and exits with `exit_code`; the server answers a
client's errors (bad audio, bad avatar, not supported) with 4xx / protocol error codes and its
own (render failed, internal) with 5xx. `fix` is the one-line remedy of the kind, shown when a
message has none of its own (for example a failure reported from a worker process).
"""


class LipstreamError(Exception):
    """Base of every error a user can cause or fix; raise a subclass, never this class."""

    exit_code = 1
    fix = "see the message"
    client_fault = True  # the caller can fix it (HTTP 4xx), else the service's own fault (5xx)


class BadAudioError(LipstreamError):
    """The audio can't be used: unreadable, empty, silent, too long, wrong format."""

    exit_code = 3
    fix = "give speech audio: a path to a media file, or samples with their sample_rate"


class BadAvatarError(LipstreamError):
    """The avatar can't be used: no face, unknown name, corrupt or old package, too short."""

    exit_code = 4
    fix = "give 'default', a package made by `lipstream prepare`, or a photo/video of one face"


class NotSupportedError(LipstreamError):
    """The request needs something this installation lacks (weights, a GPU, an option)."""

    exit_code = 5
    fix = "choose one of the values the message lists, or install what it names"


class RenderFailedError(LipstreamError):
    """Rendering or writing the output failed for a reason outside the inputs (disk, encoder)."""

    exit_code = 6
    fix = "check the output folder (space, permissions) and try again"
    client_fault = False


class BadVideoError(LipstreamError):
    """A video to measure can't be used: unreadable, no picture, no usable face, too short."""

    exit_code = 7
    fix = "give a video with one visible face and its speech, at least a few seconds long"


class MissingProfilesError(LipstreamError):
    """No usable measured profiles for this machine (needed by `select` and `auto`)."""

    exit_code = 8
    fix = "run `lipstream bench` on this machine, or pass --profiles FILE"


class InternalError(LipstreamError):
    """lipstream itself failed (a worker process died, a server that can't start): not the input's fault."""

    exit_code = 9
    fix = "try again; if it repeats, report it with the log"
    client_fault = False


def error_class(name: str) -> type[LipstreamError]:
    """The error class called `name` (as reported across processes); InternalError if unknown."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, LipstreamError) and cls is not LipstreamError:
        return cls
    return InternalError
