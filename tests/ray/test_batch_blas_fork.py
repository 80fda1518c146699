"""`batch --ray local` renders in this process while Ray forks its processes from another thread.
OpenBLAS's fork handler stops its thread pool under a BLAS call in flight, which then spins
forever; the batch holds BLAS to one thread meanwhile (batch/run.py _blas_single_threaded)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("threadpoolctl", reason="batch --ray needs: pip install 'lipstream[ray]'")

# Matrix products in the main thread while another thread forks (subprocess with a preexec_fn
# forks rather than spawns, as Ray's process starts do), inside the batch's guard.
FORKS_BESIDE_BLAS = textwrap.dedent("""
    import subprocess, threading, time
    import numpy as np
    from threadpoolctl import threadpool_info
    from lipstream.batch.run import _blas_single_threaded

    big = np.random.default_rng(0).random((300, 300))
    big @ big  # OpenBLAS's thread pool is up
    done = threading.Event()

    def fork_loop():
        while not done.is_set():
            subprocess.run(["true"], preexec_fn=lambda: None)

    with _blas_single_threaded(True):
        threads = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        forker = threading.Thread(target=fork_loop, daemon=True)
        forker.start()
        end = time.monotonic() + 5
        while time.monotonic() < end:
            big @ big
        done.set()
        forker.join()
    print(sorted(threads))
""")


def test_blas_keeps_running_while_another_thread_forks():
    result = subprocess.run([sys.executable, "-c", FORKS_BESIDE_BLAS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[1]"]
