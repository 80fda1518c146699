"""Opus packets of a live stream (a WebSocket client's chunks), decoded with PyAV.

PyAV's FFmpeg Opus decoder takes raw packets (RFC 6716: what WebCodecs' AudioEncoder and libopus
produce, one packet of 2.5-120 ms per chunk) with no container and no header, and always
decodes at 48 kHz; without an OpusHead it skips no pre-roll, so the stream starts with the
encoder's look-ahead (312 samples, 6.5 ms, for libopus). The decoder keeps state between
packets, so a stream needs one decoder of its own.
"""

from __future__ import annotations

import av
import numpy as np

from lipstream.errors import BadAudioError

OPUS_RATE_HZ = 48000
LAYOUTS = {1: "mono", 2: "stereo"}


class OpusDecoder:
    """Raw Opus packets -> (n, channels) float32 in [-1, 1] at OPUS_RATE_HZ, in order."""

    def __init__(self, channels: int):
        if channels not in LAYOUTS:
            raise BadAudioError(f"Opus audio is decoded to 1 or 2 channels, not {channels}; send channels 1 or 2")
        self.channels = channels
        self._codec = self._open()

    def decode(self, packet: bytes) -> np.ndarray:
        """One packet's samples; BadAudioError (and a fresh decoder) for data that isn't Opus."""
        if not packet:
            raise BadAudioError("an Opus chunk is empty; send one Opus packet per chunk")
        try:
            frames = self._codec.decode(av.Packet(packet))
        except av.FFmpegError as exc:
            self._codec = self._open()  # a decoder that failed may be left mid-packet
            raise BadAudioError(f"an audio chunk is not an Opus packet ({exc.strerror}); send raw Opus packets "
                                "(RFC 6716, no Ogg or WebM container), one per chunk") from None
        parts = [_samples(frame, self.channels) for frame in frames]
        if not parts:
            return np.zeros((0, self.channels), np.float32)
        return np.clip(np.concatenate(parts).astype(np.float32, copy=False), -1.0, 1.0)

    def _open(self) -> av.CodecContext:
        codec = av.CodecContext.create("opus", "r")
        codec.sample_rate = OPUS_RATE_HZ
        codec.layout = LAYOUTS[self.channels]
        return codec


def _samples(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """(n, channels) of a decoded frame, planar (channels, n) or packed (1, n * channels)."""
    array = frame.to_ndarray()
    return array.reshape(channels, -1).T if frame.format.is_planar else array.reshape(-1, channels)
