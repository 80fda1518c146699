"""A moto S3 server on a free loopback port for the store's tests (real HTTP, no patched client)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="module")
def s3():
    """Yields fsspec storage options for the server; AWS_* variables point child processes at it too."""
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install s3fs)")
    server_mod = pytest.importorskip("moto.server", reason="the S3 tests need moto's server (pip install 'moto[server]')")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        mp.setenv(key, value)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing", "skip_instance_cache": True}
    import s3fs

    s3fs.S3FileSystem(**options).makedirs("avatars", exist_ok=True)  # moto keeps buckets per process
    yield options
    server.stop()
    mp.undo()
