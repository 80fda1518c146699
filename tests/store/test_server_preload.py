"""`lipstream serve --avatar-store s3://...`: POST /api/avatars/preload has every worker fetch and
hold the avatars; a session then uses one by name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from lipstream.store import publish
from store.packages import make_package

START_TIMEOUT_S = 120


@pytest.fixture
def server(s3, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kwargs = {"host": "127.0.0.1", "port": port, "workers": 1, "log_level": "warning",
              "avatar_store": "s3://avatars", "avatar_cache_mib": 8}
    log = tmp_path / "server.log"
    env = {**os.environ, "LIPSTREAM_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen([sys.executable, "-c", f"from lipstream.server.app import run_server; "
                                f"run_server(**{kwargs!r})"], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    http = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{http}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield http, tmp_path / "cache"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_preload_fetches_into_the_node_cache(s3, server, tmp_path):
    http, cache = server
    digest = publish(make_package(tmp_path / "eve", 7), "s3://avatars/eve", s3)
    reply = httpx.post(f"{http}/api/avatars/preload", json={"avatars": ["eve", "nobody"]}, timeout=60)
    assert reply.status_code == 200, reply.text
    eve, nobody = reply.json()
    assert eve["ok"] and eve["bytes"] > 0 and eve["kind"] == "video"
    assert not nobody["ok"] and "not found" in nobody["error"]
    assert (cache / "store" / "packages" / digest / "contents.json").is_file()
    bad = httpx.post(f"{http}/api/avatars/preload", json={"avatars": ["s3://elsewhere/x"]}, timeout=10)
    assert bad.status_code == 422
