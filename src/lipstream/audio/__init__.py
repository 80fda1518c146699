"""Audio in: decode to 16 kHz mono float32, the sample clock, features per video frame, voice activity."""

from lipstream.audio.clock import SAMPLE_RATE, FrameClock
from lipstream.audio.io import load_audio

__all__ = ["SAMPLE_RATE", "FrameClock", "load_audio"]
