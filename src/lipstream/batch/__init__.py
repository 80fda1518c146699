"""Many clips from a JSONL manifest, rendered by a pool of local processes or Ray actors that keep
their avatars loaded; outputs under fixed names, one result row per clip (`lipstream batch`)."""

from lipstream.batch.manifest import Clip, read_manifest
from lipstream.batch.output import Destination
from lipstream.batch.run import run_batch

__all__ = ["Clip", "Destination", "read_manifest", "run_batch"]
