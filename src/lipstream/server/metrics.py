"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Added latency: from the moment a frame's audio and look-ahead were in to the frame being sent.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
# Time to first frame: a turn's first audio reaching the server to its first frame leaving it.
FIRST_FRAME_BUCKETS_S = (0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)
FPS_WINDOW_S = 1.0


class Metrics:
    """The server's counters, gauges and the frame latency histogram."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("lipstream_frame_latency_seconds", "Added latency: frame ready (audio and "
                                 "look-ahead in) to frame sent", ["preset"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.first_frame = Histogram("lipstream_time_to_first_frame_seconds", "A turn's first audio chunk "
                                     "received to that turn's first frame sent", ["preset"],
                                     buckets=FIRST_FRAME_BUCKETS_S, registry=r)
        self.frames = Counter("lipstream_frames_sent_total", "Frames sent", ["preset", "kind"], registry=r)
        self.dropped = Counter("lipstream_frames_dropped_total", "Frames dropped instead of sent late",
                               ["preset", "reason"], registry=r)
        self.thinned = Counter("lipstream_frames_thinned_total", "Frames left out to lower the frame rate "
                               "for a client's slow link", ["preset"], registry=r)
        self.websocket_quality_steps = Counter("lipstream_websocket_quality_steps_total", "WebSocket output "
                                               "level changes for a client's link: quality, size or frame rate "
                                               "stepped down or back up", ["preset", "direction"], registry=r)
        self.interpolated = Counter("lipstream_frames_interpolated_total", "Frames sent blended from their "
                                    "neighbours while the renderer rendered every other frame", ["preset"], registry=r)
        self.render_rate = Counter("lipstream_render_rate_changes_total", "Renderers halving their frame rate "
                                   "(falling behind) or back to full rate", ["preset", "rate"], registry=r)
        self.fallbacks = Counter("lipstream_renderer_fallbacks_total", "Sessions moved down the renderer chain",
                                 ["from_renderer", "to_renderer", "reason"], registry=r)
        self.errors = Counter("lipstream_errors_total", "Errors sent to clients", ["code"], registry=r)
        self.quality_steps = Counter("lipstream_webrtc_quality_steps_total", "WebRTC quality steps taken on the "
                                     "receiver's bandwidth estimate", ["direction", "knob"], registry=r)
        self.underruns = Counter("lipstream_webrtc_underruns_total", "WebRTC playouts that ran out of frames "
                                 "and started their run again later", registry=r)
        self.sessions = Gauge("lipstream_sessions_active", "Sessions running now", registry=r)
        self.sessions_total = Counter("lipstream_sessions_total", "Sessions started", registry=r)
        self.fps = Gauge("lipstream_output_fps", "Frames sent per second over the last second, all sessions",
                         registry=r)
        self.fps.set_function(self._current_fps)
        self._sent_times: deque[float] = deque()

    def frame_sent(self, preset: str, idle: bool, latency_s: float) -> None:
        self.frames.labels(preset, "idle" if idle else "speech").inc()
        if not idle:
            self.latency.labels(preset).observe(latency_s)
        now = time.monotonic()
        self._sent_times.append(now)
        while self._sent_times and self._sent_times[0] < now - FPS_WINDOW_S:
            self._sent_times.popleft()

    def _current_fps(self) -> float:
        cutoff = time.monotonic() - FPS_WINDOW_S
        return float(sum(t >= cutoff for t in self._sent_times)) / FPS_WINDOW_S

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
