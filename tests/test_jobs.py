"""The job API's bookkeeping: finished jobs expire after JOB_TTL_S, at most KEPT_JOBS are kept,
and an expired job's folder goes with it."""

import time

from lipstream.server.jobs import JOB_TTL_S, KEPT_JOBS, Job, JobRunner


def finished(runner: JobRunner, tmp_path, name: str, age_s: float, state: str = "done") -> Job:
    work = tmp_path / name
    work.mkdir()
    job = Job(name, "render", state=state, created_s=time.time() - age_s, work_dir=work)
    runner.jobs[job.id] = job
    return job


def test_expired_jobs_go_with_their_folders(tmp_path):
    runner = JobRunner()
    old = finished(runner, tmp_path, "old", JOB_TTL_S + 60)
    failed = finished(runner, tmp_path, "failed", JOB_TTL_S + 1, state="failed")
    fresh = finished(runner, tmp_path, "fresh", 10)
    running = Job("running", "render", state="running", created_s=time.time() - 2 * JOB_TTL_S)
    runner.jobs[running.id] = running
    runner._evict()
    assert set(runner.jobs) == {"fresh", "running"}  # a running job never expires under its client
    assert not old.work_dir.exists() and not failed.work_dir.exists() and fresh.work_dir.exists()


def test_at_most_kept_jobs_remain_oldest_first_out(tmp_path):
    runner = JobRunner()
    for i in range(KEPT_JOBS + 5):
        finished(runner, tmp_path, f"j{i:03d}", age_s=1000 - i)  # j000 is the oldest
    runner._evict()
    assert len(runner.jobs) == KEPT_JOBS and "j000" not in runner.jobs and f"j{KEPT_JOBS + 4:03d}" in runner.jobs
    assert not (tmp_path / "j004").exists() and (tmp_path / "j005").exists()
