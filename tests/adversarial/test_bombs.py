"""Inputs that claim to be huge are refused from their headers, before anything is decoded:
a 20000 x 20000 PNG of 389 KB, a 2 KB video that claims 3 hours, a 3-hour silent FLAC. Each
must fail within seconds, without the server's process tree (jobs included) spiking."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from adversarial.conftest import AUTH
from lipstream.bench.hostile_media import long_claim_video, png_bomb, silent_flac
from live_server import health, tree_rss_mib

# The bar (refused within 30 s) is measured by `lipstream bench attack`; here the wait is only
# bounded, since a job process starts slowly on a loaded machine. That nothing was decoded shows in
# the error (the limit read from the header) and in the memory of the process tree.
REFUSED_WITHIN_S = 120
MAX_SPIKE_MIB = 300


class PeakMemory:
    """Samples the server's process tree every 50 ms in a thread; `peak` in MiB."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self.base = tree_rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss_mib(self.pid))


def submit_and_wait(api: httpx.Client, path: str, files: dict, data: dict) -> dict:
    response = api.post(path, files=files, data=data)
    if response.status_code >= 400:
        return {"state": "refused", "status": response.status_code}
    job = response.json()
    deadline = time.monotonic() + REFUSED_WITHIN_S
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"still {job['state']} after {REFUSED_WITHIN_S} s: {job}"
        time.sleep(0.2)
        job = api.get(f"/api/jobs/{job['id']}").json()
    return job


@pytest.mark.parametrize("make, name", [(png_bomb, "bomb.png"), (long_claim_video, "long.mkv")])
def test_an_avatar_source_that_claims_to_be_huge_is_refused(server, tmp_path, make, name):
    source = make(tmp_path / name)
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    with PeakMemory(server.process.pid) as memory:
        job = submit_and_wait(api, "/api/avatars", {"file": (name, source.read_bytes())}, {"name": "huge"})
    assert job["state"] in ("refused", "failed"), job
    if job["state"] == "failed":
        assert job["errorKind"] == "BadAvatarError" and ("pixels" in job["error"] or " s long" in job["error"]), job
    assert memory.peak - memory.base < MAX_SPIKE_MIB, (memory.base, memory.peak)
    assert not list(server.avatars.glob("*huge*")) and health(server)["status"] == "ok"


def test_a_three_hour_silent_flac_is_refused_before_decoding(server, tmp_path):
    flac = silent_flac(tmp_path / "silence.flac")
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    with PeakMemory(server.process.pid) as memory:
        job = submit_and_wait(api, "/api/render", {"audio": ("silence.flac", flac.read_bytes())}, {})
    assert job["state"] == "failed" and job["errorKind"] == "BadAudioError" and "min long" in job["error"], job
    assert memory.peak - memory.base < MAX_SPIKE_MIB
