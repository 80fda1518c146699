"""The avatar store: URIs fetched once into a verified disk cache, an in-memory LRU with a byte
budget, packages of another version refused. S3 tests run against moto's standalone S3 server
over real HTTP (no patched client)."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import psutil
import pytest

from lipstream.avatar.package import SCHEMA_VERSION
from lipstream.errors import BadAvatarError
from lipstream.store import AvatarStore, publish
from lipstream.store.memory import package_bytes
from store.packages import make_package


@pytest.mark.parametrize("schema, said", [(SCHEMA_VERSION + 1, "a newer version of lipstream .*; upgrade lipstream"),
                                           (SCHEMA_VERSION - 1, "an older version of lipstream .*; run lipstream "
                                                                "prepare on its source again")])
def test_a_package_of_another_version_is_refused_saying_which_and_what_to_do(tmp_path, schema, said):
    path = make_package(tmp_path / "other", 1, schema=schema)
    with pytest.raises(BadAvatarError, match=rf"{said}") as refused:
        AvatarStore(cache_mib=64).get(str(path))
    assert f"package schema {schema}, this version reads {SCHEMA_VERSION}" in str(refused.value)


def test_local_package_is_held_and_evicted_least_recently_used(tmp_path):
    packages = [make_package(tmp_path / f"a{i}", i) for i in range(3)]
    cost = package_bytes(AvatarStore(cache_mib=64).get(str(packages[0])))
    store = AvatarStore(cache_mib=2 * cost / 2**20, disk_dir=tmp_path / "disk")
    first = store.get(f"file://{packages[0]}")
    store.get(str(packages[1]))
    assert store.get(str(packages[0])) is first  # held: the same object, and now the most recent
    store.get(str(packages[2]))  # the third evicts the least recently used: packages[1]
    held = store.memory.keys()
    assert len(held) == 2 and str(packages[1].resolve()) not in " ".join(held)
    assert store.memory.evictions == 1 and store.memory.used_bytes <= 2 * cost


def test_a_package_bigger_than_the_budget_is_refused(tmp_path):
    package = make_package(tmp_path / "big", 0, frames=4)
    with pytest.raises(BadAvatarError, match="avatar-cache-mib"):
        AvatarStore(cache_mib=0.1).get(str(package))


def test_preload_reports_each_avatar(tmp_path):
    package = make_package(tmp_path / "ann", 0)
    results = AvatarStore(cache_mib=16).preload([str(package), str(tmp_path / "nobody")])
    assert results[0].ok and results[0].bytes > 0 and results[0].kind == "video"
    assert not results[1].ok and "not found" in results[1].error


# -- S3 through a real HTTP endpoint -------------------------------------------------------------

def downloads(store: AvatarStore) -> list[Path]:
    return sorted(p.name for p in (store.disk.root / "packages").iterdir())


def test_s3_round_trip_fetches_once_and_verifies(s3, tmp_path):
    digest = publish(make_package(tmp_path / "ann", 1), "s3://avatars/ann", s3)
    store = AvatarStore(cache_mib=16, disk_dir=tmp_path / "node", storage_options=s3)
    package = store.get("s3://avatars/ann")
    assert package.path == tmp_path / "node" / "packages" / digest
    assert np.array_equal(package.frames, np.load(tmp_path / "ann" / "frames.npy"))
    # a second store on the same node (another worker) finds it on disk: nothing is downloaded
    (package.path / "frames.npy").touch()
    mtime = (package.path / "frames.npy").stat().st_mtime_ns
    other = AvatarStore(cache_mib=16, disk_dir=tmp_path / "node", storage_options=s3)
    assert other.get("s3://avatars/ann").path == package.path
    assert (package.path / "frames.npy").stat().st_mtime_ns == mtime and downloads(other) == [digest]


def test_s3_republished_package_is_fetched_again(s3, tmp_path):
    first = publish(make_package(tmp_path / "v1", 2), "s3://avatars/bob", s3)
    store = AvatarStore(cache_mib=16, disk_dir=tmp_path / "node", storage_options=s3)
    assert store.get("s3://avatars/bob").path.name == first
    second = publish(make_package(tmp_path / "v2", 3), "s3://avatars/bob", s3)
    assert second != first and store.get("s3://avatars/bob").path.name == second


def test_s3_corrupt_file_is_refused_and_nothing_is_left(s3, tmp_path):
    import s3fs

    publish(make_package(tmp_path / "cat", 4), "s3://avatars/cat", s3)
    fs = s3fs.S3FileSystem(**s3)
    fs.pipe_file("avatars/cat/landmarks.npy", (tmp_path / "cat" / "frames.npy").read_bytes())  # wrong bytes
    store = AvatarStore(cache_mib=16, disk_dir=tmp_path / "node", storage_options=s3)
    with pytest.raises(BadAvatarError, match="landmarks.npy"):
        store.get("s3://avatars/cat")
    assert downloads(store) == []


def test_s3_package_of_another_version_is_refused_before_download(s3, tmp_path):
    publish(make_package(tmp_path / "old", 5, schema=SCHEMA_VERSION), "s3://avatars/old", s3)
    import s3fs

    fs = s3fs.S3FileSystem(**s3)
    manifest = json.loads(fs.cat_file("avatars/old/manifest.json"))
    fs.pipe_file("avatars/old/manifest.json", json.dumps({**manifest, "schema": SCHEMA_VERSION + 1}).encode())
    store = AvatarStore(cache_mib=16, disk_dir=tmp_path / "node", storage_options=s3)
    with pytest.raises(BadAvatarError, match=rf"a newer version of lipstream \(package schema {SCHEMA_VERSION + 1}.*upgrade"):
        store.get("s3://avatars/old")
    assert not (store.disk.root / "packages").exists() or downloads(store) == []


def test_s3_names_under_a_prefix_and_no_other_uris(s3, tmp_path):
    publish(make_package(tmp_path / "dan", 6), "s3://avatars/dan", s3)
    store = AvatarStore("s3://avatars", cache_mib=16, disk_dir=tmp_path / "node", storage_options=s3)
    assert store.get("dan").name == "dan"
    for bad in ("s3://avatars/dan", "../dan", "file:///etc"):
        with pytest.raises(BadAvatarError):
            store.get(bad)
    with pytest.raises(BadAvatarError, match="not found"):
        store.get("nobody")


def test_memory_stays_within_budget_over_50_switches(s3, tmp_path):
    """The bar: a budget of 2 avatars, 50 switches among 4; resident memory grows by at most the
    budget + 10% (the packages are 8 MiB each, so noise of a few hundred KiB doesn't matter)."""
    for i in range(4):
        publish(make_package(tmp_path / f"p{i}", 10 + i, frames=24, size=332), f"s3://avatars/p{i}", s3)
    uris = [f"s3://avatars/p{i}" for i in range(4)]
    AvatarStore(cache_mib=64, disk_dir=tmp_path / "node", storage_options=s3).preload(uris)  # fill the disk cache
    gc.collect()
    cost = package_bytes(AvatarStore(cache_mib=64, disk_dir=tmp_path / "node", storage_options=s3).get(uris[0]))
    gc.collect()
    budget = 2 * cost
    store = AvatarStore(cache_mib=budget / 2**20, disk_dir=tmp_path / "node", storage_options=s3)
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = baseline
    order = np.random.default_rng(0).integers(0, 4, 50)
    for index in order:
        package = store.get(uris[index])
        assert store.memory.used_bytes <= budget
        del package
        gc.collect()
        peak = max(peak, me.memory_info().rss)
    assert store.memory.evictions > 10
    assert peak - baseline <= budget * 1.1, f"grew {(peak - baseline) / 2**20:.1f} MiB, budget {budget / 2**20:.1f}"
