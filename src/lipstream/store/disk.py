"""Avatar packages fetched from a URI (file://, s3://, gs://, anything fsspec opens) into this
node's disk cache, once, content-addressed by the package hash (lipstream.store.contents):

    CACHE/packages/<hash>/      a verified copy of the package, never changed once there
    CACHE/uris/<sha256(uri)>    {"uri", "listing", "hash"}: what the URI held when last fetched

A fetch lists the remote folder (one cheap call); if the listing (names, sizes, ETags or mtimes)
is the one remembered for that URI and its package is in the cache, nothing is downloaded.
Otherwise the manifest is read first (a package made by another lipstream version is refused
before any array is downloaded), the files are downloaded into a temporary folder, checked
against the package's contents.json if it has one, and the folder is renamed into place, so a
crash never leaves a half-written package where a reader would find it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import fsspec

from lipstream.avatar.package import MANIFEST, parse_manifest
from lipstream.errors import BadAvatarError
from lipstream.store.contents import (
    CONTENTS,
    contents_bytes,
    contents_hash,
    package_contents,
    parse_contents,
    verify_file,
)


def is_remote(spec: str) -> bool:
    """True for a URI with a scheme (s3://, gs://, file://, memory://, ...), not a plain path."""
    return "://" in spec


class DiskCache:
    """Packages fetched from URIs, kept under `root`; `storage_options` go to fsspec (for example
    {"endpoint_url": ...} for an S3-compatible server; credentials come from the usual places)."""

    def __init__(self, root: Path, storage_options: dict | None = None):
        self.root = Path(root)
        self.storage_options = storage_options or {}

    def fetch(self, uri: str) -> tuple[Path, str]:
        """The local folder of the package at `uri` and its hash, downloading it if needed."""
        fs, base = self._open(uri)
        listing = self._listing(fs, base, uri)
        remembered = self._remembered(uri)
        if remembered and remembered.get("listing") == listing:
            folder = self.root / "packages" / remembered["hash"]
            if (folder / CONTENTS).is_file():
                return folder, remembered["hash"]
        folder, digest = self._download(fs, base, uri, listing)
        self._remember(uri, listing, digest)
        return folder, digest

    def exists(self, uri: str) -> bool:
        """True if a package (its manifest) is at `uri`."""
        fs, base = self._open(uri)
        fs.invalidate_cache(base)
        return fs.exists(f"{base}/{MANIFEST}")

    def _open(self, uri: str):
        try:
            fs, base = fsspec.core.url_to_fs(uri, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise BadAvatarError(f"can't open avatar {uri}: {exc}") from None
        return fs, base.rstrip("/")

    def _listing(self, fs, base: str, uri: str) -> dict:
        """{relative name: [size, version tag]} of every file under the URI."""
        fs.invalidate_cache(base)  # fsspec keeps listings: this one must be fresh
        try:
            found = fs.find(base, detail=True)
        except (OSError, PermissionError) as exc:
            raise BadAvatarError(f"can't list avatar {uri}: {exc}") from None
        listing = {}
        for path, info in found.items():
            name = path[len(base):].lstrip("/")
            if name and info.get("type", "file") == "file":
                tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or ""
                listing[name] = [int(info.get("size") or 0), str(tag)]
        if MANIFEST not in listing:
            raise BadAvatarError(f"avatar {uri} not found: no {MANIFEST} there (publish a folder made by "
                                 "lipstream prepare with lipstream.store.publish)")
        return listing

    def _download(self, fs, base: str, uri: str, listing: dict) -> tuple[Path, str]:
        parse_manifest(fs.cat_file(f"{base}/{MANIFEST}"), uri)  # refuse another version before the arrays
        expected = parse_contents(fs.cat_file(f"{base}/{CONTENTS}"), uri)["files"] if CONTENTS in listing else None
        if expected is not None and set(expected) != set(listing) - {CONTENTS}:
            raise BadAvatarError(f"avatar {uri} is incomplete: its files are not those its {CONTENTS} lists; "
                                 "publish it again")
        (self.root / "packages").mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.root / "packages"))
        try:
            for name in sorted(set(listing) - {CONTENTS}):
                target = work / name
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fs.get_file(f"{base}/{name}", str(target))
                except OSError as exc:
                    raise BadAvatarError(f"can't download {name} of avatar {uri}: {exc}") from None
                if expected is not None:
                    verify_file(target, name, expected[name], uri)
            contents = package_contents(work)
            (work / CONTENTS).write_bytes(contents_bytes(contents))
            digest = contents_hash(contents)
            folder = self.root / "packages" / digest
            try:
                os.rename(work, folder)
            except OSError:  # already there (another process fetched the same package): keep that one
                if not (folder / CONTENTS).is_file():
                    raise
            return folder, digest
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _index(self, uri: str) -> Path:
        return self.root / "uris" / hashlib.sha256(uri.encode()).hexdigest()

    def _remembered(self, uri: str) -> dict | None:
        try:
            entry = json.loads(self._index(uri).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return entry if isinstance(entry, dict) and entry.get("uri") == uri else None

    def _remember(self, uri: str, listing: dict, digest: str) -> None:
        index = self._index(uri)
        index.parent.mkdir(parents=True, exist_ok=True)
        partial = index.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"uri": uri, "listing": listing, "hash": digest}))
        os.replace(partial, index)


def publish(package: Path, uri: str, storage_options: dict | None = None) -> str:
    """Upload a package folder to `uri` with its contents.json (written last, so a reader never
    trusts a half-uploaded package); returns the package hash."""
    package = Path(package)
    parse_manifest((package / MANIFEST).read_bytes(), str(package))
    contents = package_contents(package)
    fs, base = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    base = base.rstrip("/")
    for name in contents["files"]:
        fs.put_file(str(package / name), f"{base}/{name}")
    fs.pipe_file(f"{base}/{CONTENTS}", contents_bytes(contents))
    return contents_hash(contents)
