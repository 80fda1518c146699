"""The one engine core: a push session (audio in, frames with their exact audio out, one clock)."""

from lipstream.session.clock import Clock, ManualClock, RealClock
from lipstream.session.core import Session
from lipstream.session.frames import TIME_BASE, Frame, Notice
from lipstream.session.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset

__all__ = ["DEFAULT_PRESET", "PRESETS", "TIME_BASE", "Clock", "Frame", "ManualClock", "Notice", "Preset",
           "RealClock", "Session", "get_preset"]
