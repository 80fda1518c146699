"""A real server and a client whose link carries 300 kbit/s (a relay on loopback): the server
steps quality down instead of building a backlog, says so, and counts it in /metrics. Asserts
behaviour (steps taken, no backlog left at the end), not speed."""

import asyncio

import numpy as np
import pytest

from live_server import start_server, stop_server
from lipstream.bench.load import metric_lines, throttled_client
from lipstream.bench.render import looped_speech

SECONDS = 8.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("slow-link"), max_sessions=2)
    yield s
    stop_server(s)


def test_a_slow_link_gets_lower_quality_not_a_backlog(server):
    result = asyncio.run(asyncio.wait_for(throttled_client(server.ws, looped_speech(SECONDS), kbps=300.0), 120))
    assert not result.errors
    downs = [s for s in result.statuses if s["direction"] == "down"]
    assert downs, "no quality step down on a 300 kbit/s link"
    assert downs[0]["jpegQuality"] < 80 and {"drainKbps", "drainFps", "queueMs", "level"} <= set(downs[0])
    assert result.stats["quality"]["stepsDown"] == len(downs) and result.stats["quality"]["level"] > 0
    # No backlog: the session's last frames and its end come soon after the audio (25 fps of
    # full-quality frames would take this link about 7 times as long as the audio to carry).
    assert result.ended_s is not None and result.ended_s - result.end_sent_s < SECONDS / 2
    sizes = np.array([n for _, _, n in result.frames])
    assert len(sizes) > 2 and sizes[-len(sizes) // 3 :].mean() < sizes[0] / 2  # smaller frames once stepped
    steps = metric_lines(server.http, ("lipstream_websocket_quality_steps_total",))
    assert any('direction="down"' in line and float(line.split()[-1]) >= 1 for line in steps), steps
