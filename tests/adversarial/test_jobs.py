"""The job API attacked: jobs one after another, cancelled, past their time limit; nothing they
half-wrote may stay behind (uploads in the server's TMPDIR, packages in its avatars folder)."""

from __future__ import annotations

import asyncio
import io
import time
import wave

import httpx
import numpy as np

from adversarial.conftest import AUTH, TOKEN
from lipstream.bench.hostile_media import still_video
from live_server import health, start_server, stop_server
from lipstream.avatar.media import read_image
from lipstream.avatar.resolve import bundled_asset
from lipstream.server.jobs import FINISHED_STATES, KEPT_JOBS, Job, JobRunner


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(samples.tobytes())
    return out.getvalue()


def wait_job(api: httpx.Client, job: dict, timeout_s: float = 50.0, until=lambda j: j["state"] in FINISHED_STATES):
    deadline = time.monotonic() + timeout_s
    while not until(job):
        assert time.monotonic() < deadline, f"job still {job['state']} after {timeout_s:g} s"
        time.sleep(0.3)
        job = api.get(f"/api/jobs/{job['id']}").json()
    return job


def job_dirs(server) -> list:
    return [d for root in server.tmp.glob("lipstream-jobs-*") for d in root.iterdir()]


def test_render_jobs_one_after_another_all_finish(server, speech16):
    """The first finished job once broke every later submit (500, an upload left each time)."""
    samples, rate = speech16
    audio = wav_bytes(samples[: 2 * rate], rate)
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    ids = []
    for _ in range(3):
        response = api.post("/api/render", files={"audio": ("a.wav", audio)},
                            data={"renderer": "static", "driver": "energy"})
        assert response.status_code == 202, response.text
        job = wait_job(api, response.json())
        assert job["state"] == "done", job
        ids.append(job["id"])
    assert health(server)["status"] == "ok" and health(server)["jobs"]["running"]
    assert len(job_dirs(server)) == 3  # the three results, nothing else
    assert api.get(f"/api/jobs/{ids[0]}/result").status_code == 200


def test_cancelled_prepare_leaves_nothing_behind(server, tmp_path):
    video = still_video(tmp_path / "still.mp4", read_image(bundled_asset("portrait.png")), seconds=20)
    api = httpx.Client(base_url=server.http, headers=AUTH, timeout=30)
    before = set(job_dirs(server))
    job = api.post("/api/avatars", files={"file": ("still.mp4", video.read_bytes())}, data={"name": "slow"}).json()
    job = wait_job(api, job, until=lambda j: j["state"] in FINISHED_STATES or j["done"] > 5)
    assert job["state"] == "running", job  # mid-way through its 500 frames
    assert api.delete(f"/api/jobs/{job['id']}").status_code == 200
    job = wait_job(api, job, timeout_s=10)
    assert job["state"] == "cancelled", job
    assert sorted(p.name for p in server.avatars.iterdir() if "slow" in p.name) == []
    assert set(job_dirs(server)) == before
    assert api.delete("/api/jobs/nosuchjob").status_code == 404


def test_a_job_past_its_time_limit_is_stopped_and_cleaned(tmp_path_factory, speech16):
    s = start_server(tmp_path_factory.mktemp("strict"), token=TOKEN, workers=1, job_timeout_s=1.0)
    try:
        samples, rate = speech16
        api = httpx.Client(base_url=s.http, headers=AUTH, timeout=30)
        long_audio = wav_bytes(np.tile(samples, 5), rate)  # a minute: far more than 1 s of work
        job = wait_job(api, api.post("/api/render", files={"audio": ("a.wav", long_audio)}).json())
        assert job["state"] == "failed" and job["errorKind"] == "TimedOut", job
        assert job_dirs(s) == []
        assert health(s)["status"] == "ok"
    finally:
        stop_server(s)


def test_eviction_of_finished_jobs():
    """Unit: past KEPT_JOBS finished jobs, submitting evicts the oldest (and their folders)."""

    async def scenario():
        runner = JobRunner()
        runner.start()
        try:
            for i in range(KEPT_JOBS + 5):
                job = Job(f"old{i}", "render", state="done", created_s=time.time() - 100 + i, work_dir=runner.new_work_dir())
                runner.jobs[job.id], runner._args[job.id] = job, {}
            runner._queue = asyncio.Queue()  # keep the loop from running the new job
            new = runner.submit("render", {}, runner.new_work_dir())
            assert new.id in runner.jobs and len(runner.jobs) <= KEPT_JOBS + 1
            assert "old0" not in runner.jobs and f"old{KEPT_JOBS + 4}" in runner.jobs
            assert runner.healthy
        finally:
            await runner.stop()
        assert not runner.healthy

    asyncio.run(scenario())

