"""Real-time sessions: presets, the per-session pipeline on the one clock, worker processes."""

from lipstream.stream.audio_in import AudioFormat
from lipstream.session.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from lipstream.stream.session import SessionConfig, SessionPipeline

__all__ = ["DEFAULT_PRESET", "PRESETS", "AudioFormat", "Preset", "SessionConfig", "SessionPipeline", "get_preset"]
