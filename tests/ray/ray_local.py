"""A local Ray for the tests in this folder (`from ray_local import local_ray`): 2 CPUs, no
dashboard, auth off, temp dirs, and the settings `lipstream serve --ray local` starts Ray with
(ray_runtime.LOCAL_RAY_ENV: workers at normal priority; ray_serve.SERVE_ENV); shut down after
each module. Skipped with the reason when Ray isn't installed (`pip install 'lipstream[ray]'`). Not a conftest.py: this folder has no
__init__.py (one would make `import ray` find it), so a conftest here would shadow tests/conftest.py."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from lipstream.ray_runtime import LOCAL_RAY_ENV
from lipstream.server.ray_serve import SERVE_ENV


def _ray():
    try:
        import ray
    except ImportError:
        ray = None
    if ray is None or not hasattr(ray, "init"):  # without Ray, `import ray` may find this folder
        pytest.skip("Ray is not installed: pip install 'lipstream[ray]'", allow_module_level=True)
    return ray


@pytest.fixture(scope="module")
def local_ray():
    ray = _ray()
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    for name, value in {**LOCAL_RAY_ENV, **SERVE_ENV}.items():  # what `lipstream serve --ray local` runs Ray with
        mp.setenv(name, value)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    yield ray
    ray.shutdown()
    mp.undo()
    shutil.rmtree(temp, ignore_errors=True)
