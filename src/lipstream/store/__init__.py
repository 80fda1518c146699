"""Avatars by name or URI for a fleet: fetched once per node into a disk cache, held in memory
within a byte budget.

    store = AvatarStore(cache_mib=512)
    package = store.get("s3://bucket/avatars/ann")      # or gs://, file://, a path, "default"
    store.preload(["s3://bucket/avatars/ann", ...])     # before the users who need them connect

Remote packages land in lipstream.store.disk's content-addressed cache (verified, never
half-written); every loaded package, remote or local, is held by lipstream.store.memory's LRU.
`publish` uploads a package folder with the listing that readers verify against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lipstream.avatar.package import AvatarPackage, load_package
from lipstream.avatar.resolve import DEFAULT_NAME, SAFE_NAME, cache_dir, resolve_avatar
from lipstream.errors import BadAvatarError, LipstreamError
from lipstream.store.disk import DiskCache, is_remote, publish
from lipstream.store.memory import MemoryLRU, package_bytes

DEFAULT_CACHE_MIB = 1024


@dataclass
class Preloaded:
    """One avatar's preload result: ok with its size in memory, or the error that stopped it."""

    avatar: str
    ok: bool
    bytes: int = 0
    error: str | None = None
    kind: str | None = None

    def to_dict(self) -> dict:
        return {"avatar": self.avatar, "ok": self.ok, "bytes": self.bytes, "error": self.error, "kind": self.kind}


class AvatarStore:
    """Finds, fetches and holds avatar packages.

    avatars: where names are looked up: None (only "default", paths and URIs), a local folder,
    or a URI prefix (names then mean `avatars/NAME` and nothing else is accepted: what a server
    uses so clients can't point it at arbitrary URIs; "default" is the bundled portrait unless
    the prefix has one). cache_mib: the in-memory budget.
    disk_dir: the node's disk cache (default $LIPSTREAM_CACHE/store, else ~/.cache/lipstream/store).
    """

    def __init__(self, avatars: str | os.PathLike | None = None, cache_mib: float = DEFAULT_CACHE_MIB,
                 disk_dir: Path | None = None, storage_options: dict | None = None):
        self.avatars = str(avatars) if avatars is not None else None
        self.memory = MemoryLRU(int(cache_mib * 2**20))
        self.disk = DiskCache(disk_dir or cache_dir().parent / "store", storage_options)

    def get(self, spec: str) -> AvatarPackage:
        """The package `spec` names (see the class docstring); BadAvatarError saying why not."""
        spec = str(spec)
        if self.avatars is not None and is_remote(self.avatars):
            if not SAFE_NAME.fullmatch(spec):
                raise BadAvatarError(f"{spec!r} is not a valid avatar name (letters, digits, '.', '_', '-')")
            uri = f"{self.avatars.rstrip('/')}/{spec}"
            if spec != DEFAULT_NAME or self.disk.exists(uri):
                return self._remote(uri, spec)
            return self._local(resolve_avatar(DEFAULT_NAME), spec)  # the bundled one, as with a folder
        if is_remote(spec) and not spec.startswith("file://"):
            if self.avatars is not None:
                raise BadAvatarError(f"{spec!r}: this server takes avatar names, not URIs")
            return self._remote(spec, spec)
        path = spec.removeprefix("file://") if spec.startswith("file://") else spec
        avatars_dir = Path(self.avatars) if self.avatars is not None else None
        return self._local(resolve_avatar(path, avatars_dir=avatars_dir), spec)

    def _local(self, package: AvatarPackage, spec: str) -> AvatarPackage:
        stamp = (package.path / "manifest.json").stat().st_mtime_ns
        return self.memory.get(f"{package.path.resolve()}@{stamp}", lambda: package, spec)

    def preload(self, specs: list[str]) -> list[Preloaded]:
        """Fetch and hold each avatar now; an avatar that fails doesn't stop the others."""
        results = []
        for spec in specs:
            try:
                package = self.get(spec)
            except LipstreamError as exc:
                results.append(Preloaded(str(spec), False, error=str(exc)))
            else:
                results.append(Preloaded(str(spec), True, package_bytes(package), kind=package.kind))
        return results

    def _remote(self, uri: str, name: str) -> AvatarPackage:
        folder, digest = self.disk.fetch(uri)
        return self.memory.get(f"sha256:{digest}", lambda: load_package(folder), name)


__all__ = ["AvatarStore", "DEFAULT_CACHE_MIB", "Preloaded", "publish"]
