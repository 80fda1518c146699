"""Latency presets: each a documented choice of chunking, look-ahead, driver, renderer, quality.

The look-ahead a preset waits for is `lookahead_ms` when set: the live presets decide each frame on
that much future audio, and frames the driver would have decided differently with more of it are
not revised (docs/server.md measures what that costs). `low`, the default, waits 100 ms: no more
than one of the 100 ms chunks seed 002's clients send, so a frame never waits for two chunks
after its own. Otherwise it is the driver's own
(`Driver.lookahead_ms`, what it needs to decide a frame exactly as offline, including closing the
mouth in silence) plus `guard_ms`. `block_ms` is how much
audio is collected between driver runs: 0 is progressive processing (a frame goes out as soon
as its audio and look-ahead are in); larger blocks spend less CPU per frame and add up to
`block_ms` of latency. `driver_cpu_share` caps the driver's time at that share of real time (it
then runs less often, on more frames at once; see `StreamingDriver`). `deadline_ms` is how late
(after it could first have been made, or after its audio is due to play, whichever is later) a
frame may still be sent; later ones are dropped and counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lipstream.errors import NotSupportedError


@dataclass(frozen=True)
class Preset:
    """One latency/quality trade-off (see the module docstring for the timing fields)."""

    name: str
    driver: str
    renderer: str  # "auto": bank for video avatars, warp for photos
    block_ms: float
    driver_cpu_share: float
    context_ms: float  # audio before the first new frame the driver sees again (warm-up)
    guard_ms: float
    lookahead_ms: float | None  # None: the driver's own plus guard_ms
    deadline_ms: float
    jpeg_quality: int
    h264_crf: int
    h264_preset: str
    queue_frames: int  # frames buffered for a slow client before the oldest is dropped

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ultra_low", driver="viseme", renderer="auto", block_ms=0, driver_cpu_share=0.5,
               context_ms=1000, guard_ms=0, lookahead_ms=60, deadline_ms=250, jpeg_quality=70, h264_crf=30,
               h264_preset="ultrafast", queue_frames=4),
        Preset("low", driver="viseme", renderer="auto", block_ms=0, driver_cpu_share=0.25,
               context_ms=1000, guard_ms=40, lookahead_ms=100, deadline_ms=400, jpeg_quality=80, h264_crf=26,
               h264_preset="ultrafast", queue_frames=8),
        Preset("balanced", driver="viseme", renderer="auto", block_ms=120, driver_cpu_share=0.25,
               context_ms=800, guard_ms=100, lookahead_ms=None, deadline_ms=800, jpeg_quality=85, h264_crf=23,
               h264_preset="veryfast", queue_frames=16),
        Preset("high_quality", driver="phoneme", renderer="auto", block_ms=400, driver_cpu_share=0.5,
               context_ms=1500, guard_ms=200, lookahead_ms=None, deadline_ms=2000, jpeg_quality=92, h264_crf=20,
               h264_preset="veryfast", queue_frames=50),
    )
}
DEFAULT_PRESET = "low"


def get_preset(name: str) -> Preset:
    """The preset called `name`; NotSupportedError naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise NotSupportedError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
