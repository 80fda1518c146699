"""Loaded avatar packages held in memory, least recently used first out, within a byte budget.

A package's cost is the size of its arrays (frames, landmarks, boxes, masks, mouth bank): what a
process holds resident once it has read them, which `load` does right away (so a preloaded
avatar's first frame doesn't wait for the disk). Evicting one drops the cache's reference; its
memory maps close once no session uses it any more.
"""

from __future__ import annotations

import mmap
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields

import numpy as np

from lipstream.avatar.package import AvatarPackage
from lipstream.errors import BadAvatarError


def package_bytes(package: AvatarPackage) -> int:
    """The bytes of every array in the package (its cost in the cache)."""
    arrays = [getattr(package, f.name) for f in fields(package) if isinstance(getattr(package, f.name), np.ndarray)]
    return sum(a.nbytes for a in arrays) + sum(a.nbytes for a in package.bank.values())


def read_into_memory(package: AvatarPackage) -> None:
    """Touch one byte per page of every array, so a memory-mapped package is resident now."""
    arrays = [getattr(package, f.name) for f in fields(package) if isinstance(getattr(package, f.name), np.ndarray)]
    for array in arrays + list(package.bank.values()):
        if array.size and array.flags.c_contiguous:
            int(array.reshape(-1).view(np.uint8)[:: mmap.PAGESIZE].sum())


class MemoryLRU:
    """key -> AvatarPackage, at most `budget_bytes` of them (thread-safe)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self._held: OrderedDict[str, tuple[AvatarPackage, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: str, load: Callable[[], AvatarPackage], name: str = "") -> AvatarPackage:
        """The package held under `key`, else `load()`ed, read into memory and held (evicting the
        least recently used ones to make room). BadAvatarError if it alone exceeds the budget."""
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return self._held[key][0]
        package = load()
        cost = package_bytes(package)
        if cost > self.budget_bytes:
            raise BadAvatarError(f"avatar {name or key} needs {cost / 2**20:.1f} MiB, more than the avatar cache's "
                                 f"{self.budget_bytes / 2**20:.1f} MiB; raise --avatar-cache-mib")
        with self._lock:
            while self._held and self.used_bytes + cost > self.budget_bytes:
                self._held.popitem(last=False)
                self.evictions += 1
            self._held[key] = (package, cost)
        read_into_memory(package)
        return package

    @property
    def used_bytes(self) -> int:
        return sum(cost for _, cost in self._held.values())

    def keys(self) -> list[str]:
        """Held keys, least recently used first."""
        with self._lock:
            return list(self._held)
