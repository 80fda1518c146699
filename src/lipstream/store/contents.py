"""A package's contents listing and its hash: what names a package in the node's disk cache.

    contents.json   {"version": 1, "files": {"frames.npy": {"bytes": 123, "sha256": "..."}, ...}}

The package hash is the SHA-256 of that listing written canonically (sorted keys, no spaces), so
two copies of a package with the same files have the same hash wherever they came from, and a
copy whose files don't match the listing is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lipstream.avatar.package import file_sha256
from lipstream.errors import BadAvatarError

CONTENTS = "contents.json"
CONTENTS_VERSION = 1


def package_contents(folder: Path) -> dict:
    """The listing of every file under `folder` (but contents.json itself), with sizes and hashes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != CONTENTS)
    return {"version": CONTENTS_VERSION,
            "files": {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                      for p in files}}


def contents_bytes(contents: dict) -> bytes:
    """The canonical bytes of a listing (what is written as contents.json and hashed)."""
    return json.dumps(contents, sort_keys=True, separators=(",", ":")).encode()


def contents_hash(contents: dict) -> str:
    """The package hash: hex SHA-256 of the canonical listing."""
    return hashlib.sha256(contents_bytes(contents)).hexdigest()


def parse_contents(data: bytes, where: str) -> dict:
    """A listing read from `where`; BadAvatarError if it is not one this version reads."""
    try:
        contents = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadAvatarError(f"avatar {where} is corrupt: {CONTENTS} is not valid JSON ({exc}); publish it again") from None
    if not isinstance(contents, dict) or not isinstance(contents.get("files"), dict):
        raise BadAvatarError(f"avatar {where} is corrupt: {CONTENTS} has no file list; publish it again")
    if contents.get("version") != CONTENTS_VERSION:
        raise BadAvatarError(f"avatar {where} was published by another version of lipstream ({CONTENTS} version "
                             f"{contents.get('version')}, this version reads {CONTENTS_VERSION}); publish it again")
    for name in contents["files"]:
        if name.startswith("/") or ".." in Path(name).parts:
            raise BadAvatarError(f"avatar {where} is corrupt: {CONTENTS} names a file outside the package ({name})")
    return contents


def verify_file(path: Path, name: str, expected: dict, where: str) -> None:
    """Check one downloaded file's size and SHA-256 against its listing entry."""
    size = path.stat().st_size
    if size != expected.get("bytes"):
        raise BadAvatarError(f"avatar {where} is corrupt: {name} has {size} bytes, its listing says "
                             f"{expected.get('bytes')}; publish it again")
    if file_sha256(path) != expected.get("sha256"):
        raise BadAvatarError(f"avatar {where} is corrupt: {name} does not match its SHA-256 in {CONTENTS}; "
                             "publish it again")
